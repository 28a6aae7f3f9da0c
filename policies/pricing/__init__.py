"""What requests cost in US dollars: each deployment's price (config over the shipped
table), and a request's cost from the usage its upstream calls reported."""

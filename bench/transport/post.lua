-- wrk script: POST a ~300-byte OpenAI chat body (non-streaming).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench-team"
wrk.body = '{"model":"mock-model","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write one short sentence about load balancing HTTP requests across many upstream LLM deployments, please."}],"temperature":0.7,"max_tokens":64,"top_p":1.0,"user":"bench-user-0001","stream":false}'

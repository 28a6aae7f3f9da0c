"""A batch of `/v1/responses` lines: each runs through the Responses turn, as the door runs
it (translated onto the chat backend), its Response is the output line's body, the turn is
stored (so a later request can continue it), and the batch's usage sums the lines'."""

from __future__ import annotations

from typing import Any

from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.router.batches.batch_helpers import FAST, StartTurnout, finished, read_lines
from tests.router.batches.batch_helpers import start_batch as start
from tests.turnout_server import simple_config

RESPONSES = "/v1/responses"


def response_line(custom_id: str, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": RESPONSES,
        "body": {"model": "m", "input": f"question {custom_id}", **body},
    }


def test_a_responses_batch_answers_and_stores_each_turn(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    server = turnout(simple_config({"up": upstream.base_url}, batches=FAST))
    lines = [response_line("r1", instructions="Be brief."), response_line("r2")]
    with server.client() as client:
        batch = finished(client, start(client, lines, RESPONSES).id)
        assert batch.status == "completed"
        output = {row["custom_id"]: row for row in read_lines(client, batch.output_file_id)}

        assert sorted(output) == ["r1", "r2"]
        for custom_id, row in output.items():
            body = row["response"]["body"]
            assert row["response"]["status_code"] == 200
            assert body["object"] == "response"
            assert body["status"] == "completed"
            assert body["output"][0]["content"][0]["text"] == f"echo: question {custom_id}"
            stored = client.responses.retrieve(body["id"])  # kept: it can be continued
            assert stored.output_text == f"echo: question {custom_id}"
        followed = client.responses.create(
            model="m",
            input="and then?",
            previous_response_id=output["r1"]["response"]["body"]["id"],
        )
        assert followed.status == "completed"

    assert batch.usage is not None
    assert batch.usage.output_tokens > 0
    sent = [r.json for r in upstream.requests if r.path.endswith("/chat/completions")]
    assert sent[0]["messages"][0] == {"role": "system", "content": "Be brief."}

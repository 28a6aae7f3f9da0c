"""Review of `load_metrics:` (issue 19): a backend whose `/metrics` arrives in several
TCP writes (a large exposition, or a slow engine) is read whole, not cut at the first;
only the engine's own lines of it are parsed."""

from __future__ import annotations

import asyncio
import time

import pytest

from providers.load_metrics import LoadMetricsSettings, LoadScraper
from providers.load_report import LoadFormat, LoadParseError, parse_load

# vLLM publishes tens of KiB of histograms before and after its gauges.
FILLER = "".join(f'vllm:some_histogram_bucket{{le="{i}"}} 1.0\n' for i in range(600))
BODY = (
    "# TYPE vllm:some_histogram_bucket gauge\n"
    + FILLER
    + "vllm:num_requests_waiting 3.0\nvllm:num_requests_running 2.0\n"
).encode()


async def _until_reported(scraper: LoadScraper) -> None:
    """Until the scraper has a report, or 3 s have passed (the assertions then say why)."""
    for _ in range(300):
        if scraper.report is not None:
            return
        await asyncio.sleep(0.01)


async def _split_metrics(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A real HTTP/1.1 server that sends its answer's body in two writes, apart in time."""
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(BODY)}\r\n\r\n"
    writer.write(head.encode() + BODY[: len(BODY) // 2])
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.write(BODY[len(BODY) // 2 :])
    await writer.drain()
    writer.close()


async def test_a_metrics_answer_sent_in_pieces_is_read_whole() -> None:
    server = await asyncio.start_server(_split_metrics, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    scraper = LoadScraper(
        "pool", LoadMetricsSettings(url=f"http://127.0.0.1:{port}/metrics", interval=60)
    )
    try:
        scraper.start()
        for _ in range(200):
            if scraper.report is not None or scraper.failures:
                break
            await asyncio.sleep(0.01)
        assert scraper.failures == 0
        assert scraper.report is not None
        assert (scraper.report.waiting, scraper.report.running) == (3, 2)
    finally:
        await scraper.aclose()
        server.close()
        await server.wait_closed()


def test_only_the_engines_own_lines_are_parsed() -> None:
    """An engine's /metrics is tens of KiB of histograms Turnout does not read, parsed on the
    event loop every interval: only the wanted lines go to the parser, so a family it cannot
    read (here a sample with no value) does not hide the queue, and the rest costs nothing."""
    text = (
        '# TYPE vllm:odd gauge\nvllm:odd{engine="0"}\n'
        + FILLER
        + "# TYPE vllm:num_requests_waiting gauge\n"
        + 'vllm:num_requests_waiting{model_name="a"} 3.0\n'
        + 'vllm:num_requests_running{model_name="a"} 2.0\n'
        + "vllm:kv_cache_usage_perc 0.25\n"
    )
    report = parse_load(text, LoadFormat.VLLM, scraped_at=time.monotonic(), max_age=1)
    assert (report.waiting, report.running, report.kv_cache_usage) == (3, 2, 0.25)
    with pytest.raises(LoadParseError):  # the wanted lines themselves are still checked
        parse_load(
            "vllm:num_requests_waiting x\nvllm:num_requests_running 1\n",
            LoadFormat.VLLM,
            scraped_at=0.0,
            max_age=1,
        )


async def test_a_scrape_of_nan_or_inf_counts_as_failed_and_the_scraper_goes_on() -> None:
    """A gauge of NaN or +Inf (an engine mid-restart) is a failed scrape, not the end of the
    scrape loop: the next good answer is read."""
    answers = [
        b"vllm:num_requests_waiting NaN\nvllm:num_requests_running 1\n",
        b"vllm:num_requests_waiting +Inf\nvllm:num_requests_running 1\n",
        b"vllm:num_requests_waiting 4\nvllm:num_requests_running 1\n",
    ]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        body = answers.pop(0) if len(answers) > 1 else answers[0]
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = LoadMetricsSettings(url=f"http://127.0.0.1:{port}/metrics", interval=0.02)
    scraper = LoadScraper("pool", settings)
    try:
        scraper.start()
        await _until_reported(scraper)
        assert scraper.failures == 2
        assert scraper.report is not None
        assert scraper.report.waiting == 4
    finally:
        await scraper.aclose()
        server.close()
        await server.wait_closed()
    with pytest.raises(LoadParseError):
        parse_load(
            "vllm:num_requests_waiting 1\nvllm:num_requests_running -Inf\n",
            LoadFormat.VLLM,
            scraped_at=0.0,
            max_age=1,
        )


async def test_a_scrape_that_raises_what_no_rule_foresaw_does_not_end_scraping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The scraper is a background task with no one to raise to: an exception its failure
    handling does not name (here the parser failing in a way no rule foresaw, once) is
    counted, and the next interval scrapes again, instead of the task dying and the
    backend's figures going stale until a restart."""
    from providers import load_metrics

    server = await asyncio.start_server(_split_metrics, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    calls = {"n": 0}

    def parse_once_badly(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a parser bug")
        return parse_load(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(load_metrics, "parse_load", parse_once_badly)
    scraper = LoadScraper(
        "pool", LoadMetricsSettings(url=f"http://127.0.0.1:{port}/metrics", interval=0.2)
    )
    try:
        scraper.start()
        await _until_reported(scraper)
        assert scraper.failures == 1
        assert scraper.report is not None
    finally:
        await scraper.aclose()
        server.close()
        await server.wait_closed()

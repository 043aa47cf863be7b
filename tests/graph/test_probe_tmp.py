import asyncio, time, pytest
from graph_helpers import *
from mailgw.errors import DeliveryError

async def test_probe(transport, draft_transport, graph, identity):
    r = await transport.send(outbound(body(html="<p>x</p>", text=None)))
    print(r, graph.requests[-1].path, graph.requests[-1].json)
    r = await transport.send(outbound(body(html="<p>x</p>")))
    print(r, graph.requests[-1].headers.get("Content-Type"), graph.delivered[-1].message)
    r = await draft_transport.send(outbound(body()))
    print(r, [(q.operation, q.path, q.status) for q in graph.requests[-3:]])
    print(len(identity.issued), identity.issued[0].resource)

async def test_probe_token_fail(transport, graph, identity):
    identity.fail_next(500, n=10)
    t = time.monotonic()
    with pytest.raises(DeliveryError) as e:
        await transport.send(outbound())
    print(time.monotonic()-t, e.value, e.value.hint, len(identity.requests))

async def test_probe_mime_big(transport, draft_transport, graph):
    for tr in (transport, draft_transport):
        try:
            await tr.send(outbound(body(html="<p>x</p>", attachments=[attachment("a.bin", b"x"*2_500_000)])))
            print("ok")
        except DeliveryError as e:
            print(e, [(q.operation, q.status) for q in graph.requests])

async def test_probe_gap(draft_transport, graph):
    try:
        await draft_transport.send(outbound(body(attachments=[attachment("a.bin", b"x"*3_100_000)])))
        print("ok")
    except DeliveryError as e:
        print(e, [(q.operation, q.status) for q in graph.requests])

from conftest import ROWS


async def test_chunked_serves_every_row_as_ndjson(client, auth):
    response = await client.get("/chunked", headers=auth)
    assert response.status == 200
    body = await response.read()
    assert body.count(b"\n") == ROWS

"""`GET /` answers a small page listing the endpoints (not a 404), /preview only when it is
on, and nothing a browser could run."""

from __future__ import annotations

from cds_service.registry import SERVICES


def test_home_lists_the_endpoints(make_app, settings):
    reply = make_app(settings.with_overrides(preview=True)).test_client().get("/")
    assert reply.status_code == 200 and reply.mimetype == "text/html"
    page = reply.get_data(as_text=True)
    assert '<a href="/cds-services">' in page
    for spec in SERVICES.values():
        assert f"/cds-services/{spec.id}" in page
    for path in ("/openapi.json", "/healthz", "/readyz", "/metrics", "/preview/"):
        assert path in page
    assert "<script" not in page and "default-src 'none'" in reply.headers["Content-Security-Policy"]


def test_home_without_preview_does_not_list_it(make_app, settings):
    reply = make_app(settings.with_overrides(preview=False)).test_client().get("/")
    assert reply.status_code == 200 and "/preview" not in reply.get_data(as_text=True)


def test_home_links_follow_a_path_prefix(make_app, settings):
    reply = make_app(settings).test_client().get("/", base_url="http://localhost/vitd/")
    assert '<a href="/vitd/cds-services">' in reply.get_data(as_text=True)

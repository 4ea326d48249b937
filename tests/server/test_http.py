"""Every status the API answers, with its body, through plain HTTP against real servers."""
from __future__ import annotations

import threading
import time

import httpx

from server.auth import KeyStore
from tests.server import fake_pipeline
from tests.server.conftest import FACE, HEADERS, KEY, b64, running, wait_terminal

STICKER = {"image": b64(FACE), "seed": 1}


def post(server, path, body, headers=HEADERS, **kwargs):
    return httpx.post(f"{server.url}{path}", json=body, headers=headers, timeout=30, **kwargs)


# -- auth -------------------------------------------------------------------------------------


def test_bearer_token_is_accepted(api):
    response = post(api, "/v1/face-to-sticker", STICKER, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 200


def test_wrong_key_is_401(api):
    response = post(api, "/v1/face-to-sticker", STICKER, headers={"x-api-key": "SG_ffffffffffffffff"})
    assert response.status_code == 401
    assert response.json() == {"error": "Unauthorized. API key is invalid or may have expired"}


def test_polling_needs_a_key_and_the_owner(api):
    submit = post(api, "/v2/face-to-sticker", STICKER).json()
    assert httpx.get(submit["status_url"]).status_code == 401
    other = "SG_aaaaaaaaaaaaaaaa"
    KeyStore(api.settings.keys_file).add(other)
    response = httpx.get(submit["status_url"], headers={"x-api-key": other})
    assert response.status_code == 404
    assert response.json() == {"error": f"Request {submit['request_id']} not found"}
    KeyStore(api.settings.keys_file).revoke(other)


def test_model_not_allowed_is_403_and_rpm_is_429(tmp_path):
    with running(tmp_path) as server:
        store = KeyStore(server.settings.keys_file)
        limited = "SG_1111111111111111"
        store.add(limited, models=["face-to-sticker"], rpm=1)
        headers = {"x-api-key": limited}
        refused = post(server, "/v1/faceswap-v4", {"source_image": "x", "target_image": "y"}, headers=headers)
        assert refused.status_code == 403
        assert refused.json() == {"error": "this API key is not allowed to use faceswap-v4"}
        assert post(server, "/v1/face-to-sticker", STICKER, headers=headers).status_code == 200
        limited_out = post(server, "/v1/face-to-sticker", STICKER, headers=headers)
        assert limited_out.status_code == 429
        assert "x-rate-limit-reset-at-utc" in limited_out.headers
        assert 50 <= int(limited_out.headers["retry-after"]) <= 60  # the one-minute window's remainder
        assert "1 requests per minute" in limited_out.json()["error"]


def test_credits_are_debited_only_on_success(tmp_path):
    with running(tmp_path, key_credits=2.5, costs={"face-to-sticker": 1.0}) as server:
        ok = post(server, "/v1/face-to-sticker", STICKER)
        assert ok.headers["X-remaining-credits"] == "1.5" and ok.headers["x-cost"] == "1.0"
        failed = post(server, "/v1/face-to-sticker", dict(STICKER, prompt="crash"))
        assert failed.status_code == 500
        credits = httpx.get(f"{server.url}/v1/get-user-credits", headers=HEADERS)
        assert credits.json() == {"credits": 1.5, "free-credits": 0.0}
        assert credits.headers["X-remaining-credits"] == "1.5"
        KeyStore(server.settings.keys_file).credit(KEY, -1.0)
        assert post(server, "/v1/face-to-sticker", STICKER).status_code == 406


def test_no_auth_serves_without_keys_and_sends_constant_credits(tmp_path):
    with running(tmp_path, no_auth=True, unmetered_credits=77) as server:
        response = post(server, "/v1/face-to-sticker", STICKER, headers={})
        assert response.status_code == 200 and response.headers["X-remaining-credits"] == "77.0"


# -- request bodies ---------------------------------------------------------------------------


def test_out_of_range_names_the_field_and_range(api):
    response = post(api, "/v1/expression-editor", {"image": b64(FACE), "aaa": 31, "sample_parts": "Nose"})
    assert response.status_code == 400
    assert response.json() == {"error": "aaa must be a number between -30 and 30 (got 31); "
                                        "sample_parts must be one of OnlyExpression, OnlyRotation, OnlyMouth, "
                                        "OnlyEyes, All (got 'Nose')"}


def test_wrong_type_and_missing_field(api):
    response = post(api, "/v1/faceswap-v4", {"source_image": b64(FACE), "seed": "abc"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert "target_image is required" in error and "seed must be an integer" in error


def test_lenient_coercion_and_unknown_fields(api):
    body = {"image": b64(FACE), "smile": "1.2", "aaa": "-3", "image_quality": "50", "image_format": "JPG",
            "not_a_field": [1, 2]}
    response = post(api, "/v1/expression-editor", body)
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    params = fake_pipeline.CALLS["expression-editor"]["params"]
    # The pipeline gets its typed Params, built from the validated model with the protocol's defaults.
    assert isinstance(params, fake_pipeline.ExpressionEditorParams)
    assert params.smile == 1.2 and params.aaa == -3 and params.output == "full" and params.wink == 0


def test_omitted_seed_is_drawn_and_echoed(api):
    first = post(api, "/v1/face-to-sticker", {"image": b64(FACE)})
    second = post(api, "/v1/face-to-sticker", {"image": b64(FACE)})
    seeds = {int(first.headers["x-seed-value"]), int(second.headers["x-seed-value"])}
    assert len(seeds) == 2 and all(0 <= s < 2**32 for s in seeds)
    assert fake_pipeline.CALLS["face-to-sticker"]["seed"] == int(second.headers["x-seed-value"])


def test_body_errors(api):
    not_json = httpx.post(f"{api.url}/v1/face-to-sticker", content=b"{nope", headers=HEADERS)
    assert not_json.status_code == 400 and not_json.json() == {"error": "the request body is not valid JSON"}
    array = post(api, "/v1/face-to-sticker", [1, 2])
    assert array.status_code == 400
    form = httpx.post(f"{api.url}/v1/face-to-sticker", data={"image": "x"}, headers=HEADERS)
    assert form.status_code == 406 and form.json()["error"].startswith("Invalid content type")


def test_body_too_large_is_413(tmp_path):
    with running(tmp_path, max_body_bytes=1000) as server:
        response = post(server, "/v1/face-to-sticker", {"image": "A" * 2000})
        assert response.status_code == 413 and "1000 byte limit" in response.json()["error"]


def test_unknown_and_disabled_models_are_404(tmp_path):
    with running(tmp_path, pipelines="face-to-sticker") as server:
        response = post(server, "/v2/faceswap-v4", {})
        assert response.status_code == 404
        assert response.json() == {"error": "Model faceswap-v4 is not enabled on this server"}
        assert post(server, "/v1/nope", {}).json() == {"error": "Model nope not found"}


def test_root_alias(api):
    assert post(api, "/face-to-sticker", STICKER).status_code == 200


# -- pipeline failures ------------------------------------------------------------------------


def test_pipeline_crash_is_500_without_traceback(api):
    response = post(api, "/v1/face-to-sticker", dict(STICKER, prompt="crash"))
    assert response.status_code == 500
    assert response.json() == {"error": "face-to-sticker failed: RuntimeError: kaboom in layer 3"}


def test_no_face_is_400_in_v1_and_failed_422_in_v2(api):
    from tests.server.conftest import BLACK

    v1 = post(api, "/v1/face-to-sticker", {"image": b64(BLACK)})
    assert v1.status_code == 400 and v1.json() == {"error": "No face detected in image"}
    submit = post(api, "/v2/face-to-sticker", {"image": b64(BLACK)}).json()
    status = wait_terminal(submit["status_url"])
    assert status.status_code == 422
    body = status.json()
    assert body["status"] == "FAILED" and body["error"] == "No face detected in image"
    assert set(body["metrics"]) == {"inference_time", "queue_time", "total_time"}
    assert httpx.get(submit["response_url"], headers=HEADERS).status_code == 422


def test_out_of_memory_frees_memory_answers_503_and_keeps_serving(api):
    response = post(api, "/v1/face-to-sticker", dict(STICKER, prompt="oom"))
    assert response.status_code == 503 and "ran out of memory" in response.json()["error"]
    assert "face-to-sticker" in fake_pipeline.FREED
    assert post(api, "/v1/face-to-sticker", STICKER).status_code == 200


def test_missing_weights_and_missing_pipeline_are_503(tmp_path, monkeypatch):
    from pipelines import registry
    from server import pool

    monkeypatch.setitem(registry.PIPELINES, "consistent-character", "pipelines.not_built_yet:Nothing")
    monkeypatch.setattr(pool, "LOAD_RETRY_FIRST_S", 3.0)
    with running(tmp_path, lazy=True) as server:
        (server.settings.weights_dir / "expression-editor.fake").unlink()
        missing = post(server, "/v1/expression-editor", {"image": b64(FACE)})
        assert missing.status_code == 503 and int(missing.headers["retry-after"]) >= 1
        assert missing.json() == {"error": "weights for expression-editor are not installed: "
                                           "run scripts/download_weights.py expression-editor"}
        # Remembered: a v2 submission is refused at once too, not queued to fail.
        assert post(server, "/v2/expression-editor", {"image": b64(FACE)}).json() == missing.json()
        absent = post(server, "/v1/consistent-character", {"subject": b64(FACE)})
        assert absent.status_code == 503
        assert absent.json()["error"].startswith("the consistent-character pipeline is not available")
        ready = httpx.get(f"{server.url}/ready")
        assert ready.status_code == 503 and "retry-after" in ready.headers
        report = ready.json()
        assert report["ready"] is False
        assert report["pipelines"]["expression-editor"]["state"] == "missing weights"
        assert report["pipelines"]["consistent-character"]["state"] == "unavailable"
        assert "download_weights.py expression-editor" in report["reasons"]["expression-editor"]
        (server.settings.weights_dir / "expression-editor.fake").write_text("fake")
        # The failure is remembered until its retry time (no reload storm), then the load is retried.
        assert post(server, "/v1/expression-editor", {"image": b64(FACE)}).status_code == 503
        time.sleep(3.1)
        assert post(server, "/v1/expression-editor", {"image": b64(FACE)}).status_code == 200
        assert httpx.get(f"{server.url}/ready").json()["pipelines"]["expression-editor"]["components"][0][
            "licence"] == "MIT"


# -- queue and deadlines ----------------------------------------------------------------------


def test_queue_full_is_429(tmp_path):
    with running(tmp_path, queue_max=1) as server:
        busy = threading.Thread(target=post, args=(server, "/v1/face-to-sticker", dict(STICKER, prompt="sleep:1.5")))
        busy.start()
        assert fake_pipeline.RUNNING.wait(10)
        queued = post(server, "/v2/face-to-sticker", STICKER)
        assert queued.status_code == 200
        refused = post(server, "/v2/face-to-sticker", STICKER)
        assert refused.status_code == 429 and "busy" in refused.json()["error"]
        busy.join()
        assert wait_terminal(queued.json()["status_url"]).json()["status"] == "COMPLETED"


def test_deadline_is_504_and_not_charged(tmp_path):
    with running(tmp_path, key_credits=10, request_timeout_s=0.5) as server:
        response = post(server, "/v1/face-to-sticker", dict(STICKER, prompt="sleep:1"))
        assert response.status_code == 504
        assert response.json() == {"error": "the request did not finish within 0.5 s"}
        time.sleep(0.8)
        credits = httpx.get(f"{server.url}/v1/get-user-credits", headers=HEADERS).json()
        assert credits["credits"] == 10


def test_v2_job_past_its_deadline_in_the_queue_fails(tmp_path):
    with running(tmp_path, request_timeout_s=0.5) as server:
        threading.Thread(target=post, args=(server, "/v2/face-to-sticker", dict(STICKER, prompt="sleep:1"))).start()
        assert fake_pipeline.RUNNING.wait(10)
        late = post(server, "/v2/face-to-sticker", STICKER).json()
        body = wait_terminal(late["status_url"]).json()
        assert body["status"] == "FAILED" and "timed out while waiting in the queue" in body["error"]


# -- v2 records, outputs, operations ----------------------------------------------------------


def test_v2_status_shapes_and_expiry(tmp_path):
    with running(tmp_path, job_ttl_s=60) as server:
        submit = post(server, "/v2/consistent-character", {"subject": b64(FACE), "number_of_outputs": 3,
                                                          "number_of_images_per_pose": 2}).json()
        assert set(submit) == {"request_id", "status", "poll_url", "status_url", "response_url"}
        assert submit["status"] == "QUEUED"
        status = wait_terminal(submit["status_url"]).json()
        assert status == {"status": "COMPLETED", "request_id": submit["request_id"],
                          "metrics": {"inference_time": status["metrics"]["inference_time"]}}
        result = httpx.get(submit["poll_url"], headers=HEADERS).json()
        assert len(result["images"]) == 6
        assert len({image["url"] for image in result["images"]}) == 6
        server.engine.sweep(now=time.time() + 61)
        gone = httpx.get(submit["response_url"], headers=HEADERS)
        assert gone.status_code == 404 and gone.json() == {"error": f"Request {submit['request_id']} not found"}
        assert httpx.get(result["output"]).status_code == 404


def test_urls_follow_public_base_url_or_forwarded_host(tmp_path):
    with running(tmp_path, public_base_url="https://faces.example.com/") as server:
        submit = post(server, "/v2/face-to-sticker", STICKER).json()
        assert submit["status_url"] == f"https://faces.example.com/v2/requests/{submit['request_id']}/status"
    with running(tmp_path / "b") as server:
        forwarded = {**HEADERS, "x-forwarded-proto": "https", "x-forwarded-host": "gw.example.org",
                     "x-forwarded-prefix": "/segmind"}
        submit = post(server, "/v2/face-to-sticker", STICKER, headers=forwarded).json()
        assert submit["response_url"] == f"https://gw.example.org/segmind/v2/requests/{submit['request_id']}"


def test_data_uris_when_output_storage_is_off(tmp_path):
    with running(tmp_path, store_outputs=False) as server:
        submit = post(server, "/v2/face-to-sticker", STICKER).json()
        wait_terminal(submit["status_url"])
        result = httpx.get(submit["response_url"], headers=HEADERS).json()
        assert result["output"].startswith("data:image/png;base64,")


def test_output_names_are_unguessable_and_checked(api):
    assert httpx.get(f"{api.url}/outputs/../keys.json").status_code == 404
    assert httpx.get(f"{api.url}/outputs/{'a' * 32}.png").status_code == 404


def test_operations_endpoints(api):
    assert httpx.get(f"{api.url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{api.url}/ready")
    assert ready.status_code == 200 and ready.json()["weights_profile"] == "full"
    post(api, "/v1/face-to-sticker", STICKER)
    metrics = httpx.get(f"{api.url}/metrics").text
    assert "facefoundry_requests_total" in metrics and "facefoundry_queue_depth" in metrics
    assert 'facefoundry_inference_seconds_count{endpoint="face-to-sticker"}' in metrics
    schema = httpx.get(f"{api.url}/openapi.json").json()
    smile = schema["paths"]["/v1/expression-editor"]["post"]["requestBody"]["content"]["application/json"][
        "schema"]["properties"]["smile"]
    assert smile["minimum"] == -0.3 and smile["maximum"] == 1.3 and smile["description"] == "Smile intensity"
    assert httpx.get(f"{api.url}/docs").status_code == 200


def test_tiny_profile_is_announced_on_every_response(tmp_path):
    fake_pipeline.write_markers(tmp_path / "weights" / "tiny")
    with running(tmp_path, weights="tiny") as server:
        assert httpx.get(f"{server.url}/health").headers["x-weights-profile"] == "tiny"
        assert post(server, "/v1/face-to-sticker", STICKER).headers["x-weights-profile"] == "tiny"
        assert httpx.get(f"{server.url}/ready").json()["weights_dir"].endswith("weights/tiny")


def test_wrong_verb_is_json_405(api):
    response = httpx.get(f"{api.url}/v1/faceswap-v4", headers=HEADERS)
    assert response.status_code == 405 and "error" in response.json()

"""The bodies of a stored v2 job, Segmind's shape (segmind-api.md §1, §6): the status (light) and
the result (full). Shared by the polling routes and the webhook calls."""
from __future__ import annotations

import json

from server.jobs import COMPLETED, FAILED


def request_urls(base: str, job_id: str) -> dict[str, str]:
    return {
        "poll_url": f"{base}/v1/requests/{job_id}",
        "status_url": f"{base}/v2/requests/{job_id}/status",
        "response_url": f"{base}/v2/requests/{job_id}",
    }


def failure_metrics(row: dict) -> dict:
    started = row["started"] or row["finished"]
    return {
        "inference_time": round(row["finished"] - started, 3),
        "queue_time": round(started - row["created"], 3),
        "total_time": round(row["finished"] - row["created"], 3),
    }


def job_body(row: dict, base: str, full: bool) -> tuple[int, dict, dict[str, str]]:
    """(HTTP status, body, headers) of a stored job; a FAILED job is HTTP 422 (§1)."""
    job_id = row["id"]
    if row["status"] == FAILED:
        return 422, {"status": FAILED, "request_id": job_id, "error": row["error"],
                     "metrics": failure_metrics(row)}, {}
    if row["status"] != COMPLETED:
        urls = request_urls(base, job_id)
        body = {"status": row["status"], "request_id": job_id, "status_url": urls["status_url"],
                "response_url": urls["response_url"], "metrics": {}}
        if row.get("progress"):
            # facefoundry extra: a long job's stages (consistent-character: images) done of total.
            done, total = row["progress"]
            body["progress"] = {"done": done, "total": total}
        return 200, body, {}
    result = json.loads(row["result"])
    headers = {"x-seed-value": str(result["seed"]), "x-cost": str(result["metrics"]["cost"]),
               "X-generation-time": f"{result['metrics']['inference_time']:.3f}"}
    if not full:
        return 200, {"status": COMPLETED, "request_id": job_id,
                     "metrics": {"inference_time": result["metrics"]["inference_time"]}}, headers
    files = [
        {"url": f"{base}/outputs/{f['name']}" if "name" in f else f["data_uri"], "content_type": f["content_type"],
         "file_name": f["file_name"], "file_size": f["file_size"]}
        for f in result["files"]
    ]
    body = {"status": COMPLETED, "request_id": job_id, "output": files[0]["url"], "seed": result["seed"]}
    if result["kind"] == "video":
        body["video"] = {"url": files[0]["url"], "content_type": files[0]["content_type"],
                         "file_name": files[0]["file_name"], "file_size": files[0]["file_size"]}
    else:
        body["images"] = files
    body["metrics"] = result["metrics"]
    return 200, body, headers

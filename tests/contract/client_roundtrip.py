"""A whole round trip through the Python client generated from openapi/openapi.json.

Run by tests/contract/run.sh against a running server: upload a 3-row CSV whose
images are on a local file server, poll the status to `Completed`, list the images,
download the output CSV and check it. Also checks that a bad CSV comes back as a
parsed problem, and leaves two more requests for schemathesis to find (one finished
with a failed image and a failing webhook, one still retrying a download), writing
every request id to --ids-out as a schemathesis dictionary.

Only the generated package `pixbatch_client` talks to the server.
"""

import argparse
import csv
import io
import sys
import time
import uuid

from pixbatch_client import Client
from pixbatch_client.api.requests import (
    get_requests_request_id_images,
    get_requests_request_id_output_csv,
    get_status_request_id,
)
from pixbatch_client.api.upload import post_upload
from pixbatch_client.models import (
    BindingLimit,
    ImagePage,
    ImageReport,
    InputFormat,
    PostUploadBody,
    Problem,
    RequestStatus,
    StatusBody,
    UploadAccepted,
)
from pixbatch_client.types import UNSET, File

PHOTOS = ["small_picos.jpg", "small_aitzgorri.jpg", "small_lamp_portrait.jpg"]
FINAL = {
    RequestStatus.COMPLETED,
    RequestStatus.COMPLETEDWITHERRORS,
    RequestStatus.FAILED,
    RequestStatus.CANCELLED,
}


def fail(msg: str) -> None:
    print(f"client roundtrip: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond: bool, msg: str) -> None:
    if not cond:
        fail(msg)


def upload(client: Client, csv_text: str, **fields) -> UploadAccepted | Problem:
    body = PostUploadBody(
        file=File(
            payload=io.BytesIO(csv_text.encode()),
            file_name="products.csv",
            mime_type="text/csv",
        ),
        **fields,
    )
    resp = post_upload.sync_detailed(client=client, body=body)
    check(resp.parsed is not None, f"upload: unparsed {resp.status_code}: {resp.content!r}")
    return resp.parsed


def accepted(client: Client, csv_text: str, **fields) -> UploadAccepted:
    got = upload(client, csv_text, **fields)
    check(isinstance(got, UploadAccepted), f"upload not accepted: {got}")
    check(isinstance(got.request_id, uuid.UUID), f"no request id: {got}")
    check(got.status == RequestStatus.PENDING, f"status {got.status!r}")
    return got


def wait_final(client: Client, request_id: str, timeout: float) -> StatusBody:
    deadline = time.monotonic() + timeout
    while True:
        got = get_status_request_id.sync(request_id=request_id, client=client)
        check(isinstance(got, StatusBody), f"status: {got}")
        if got.status in FINAL:
            return got
        check(time.monotonic() < deadline, f"not final after {timeout}s: {got}")
        time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--images", required=True, help="base URL of the fixture photo server")
    ap.add_argument("--dead-url", required=True, help="an image URL whose port refuses")
    ap.add_argument("--ids-out", required=True)
    args = ap.parse_args()
    client = Client(base_url=args.base_url, raise_on_unexpected_status=True, timeout=30)

    # 1. Upload: 3 rows, 4 images (row 2 has two), all on the local image server.
    img = args.images.rstrip("/")
    rows = [
        ("1", "SKU1", [f"{img}/{PHOTOS[0]}"]),
        ("2", "SKU2", [f"{img}/{PHOTOS[1]}", f"{img}/{PHOTOS[2]}"]),
        ("3", "SKU3", [f"{img}/{PHOTOS[2]}?row=3"]),
    ]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["Serial Number", "Product Name", "Input Image Urls"])
    for serial, name, urls in rows:
        w.writerow([serial, name, ",".join(urls)])
    up = accepted(client, buf.getvalue())
    check(up.products == 3 and up.images == 4, f"counts: {up}")
    rid = str(up.request_id)
    print(f"client roundtrip: uploaded {rid} (3 products, 4 images)")

    # 2. Poll to Completed.
    status = wait_final(client, rid, timeout=120)
    check(status.status == RequestStatus.COMPLETED, f"final status: {status}")
    check(status.progress.succeeded == 4 and status.progress.failed == 0, f"{status}")
    check(isinstance(status.output_csv, str), f"no output_csv: {status}")
    check(status.progress.reused == 0, f"reused on a first upload: {status}")
    print(f"client roundtrip: {status.status} ({status.progress.succeeded}/{status.progress.total})")

    # 3. List the images, one page at a time.
    images, offset = [], 0
    while True:
        page = get_requests_request_id_images.sync(
            request_id=rid, client=client, offset=offset, limit=3
        )
        check(isinstance(page, ImagePage), f"images: {page}")
        images.extend(page.items)
        if page.next_offset is UNSET:
            break
        offset = page.next_offset
    check(len(images) == 4, f"{len(images)} images")
    for im in images:
        check(str(im.state) == "succeeded", f"image {im}")
        check(isinstance(im.output_url, str) and im.output_url.endswith(".jpg"), f"{im}")
        check(isinstance(im.width, int) and im.width > 0, f"{im}")
        # A first upload on a fresh server has nothing to reuse.
        check(im.reused is False and im.reused_from is UNSET, f"reuse fields: {im}")
        # The typed report: a fixed quality, one encode, nothing else asked.
        r = im.report
        check(isinstance(r, ImageReport), f"report: {im}")
        check(r.input_format == InputFormat.JPEG and r.width == im.width, f"report: {r}")
        check(r.tries == 1 and r.binding == BindingLimit.QUALITY, f"report: {r}")
        check(r.target is UNSET and r.score is UNSET and r.max_bytes is UNSET, f"report: {r}")

    # 4. The output CSV.
    out = get_requests_request_id_output_csv.sync(request_id=rid, client=client)
    check(isinstance(out, File), f"output.csv: {out}")
    table = list(csv.reader(io.StringIO(out.payload.read().decode("utf-8-sig"))))
    header, data = table[0], [r for r in table[1:] if r]
    check("Output Image Urls" in header, f"header {header}")
    check(len(data) == 3, f"{len(data)} data rows: {table}")
    col = header.index("Output Image Urls")
    for (serial, _, urls), row in zip(rows, data):
        check(row[0] == serial, f"row order: {row}")
        outs = [u for u in row[col].split(",") if u]
        check(len(outs) == len(urls), f"row {serial}: {len(outs)} output URLs for {len(urls)}")
    print("client roundtrip: output CSV has `Output Image Urls` and 3 rows")

    # 4b. Adaptive quality and a byte cap: the report's typed fields say what decided.
    auto = accepted(
        client,
        f"Serial Number,Product Name,Input Image Urls\n1,SKU1,{img}/{PHOTOS[0]}?auto\n",
        quality="auto:60",
        max_bytes="30KB",
    )
    done = wait_final(client, str(auto.request_id), timeout=120)
    check(done.status == RequestStatus.COMPLETED, f"auto request: {done}")
    page = get_requests_request_id_images.sync(request_id=str(auto.request_id), client=client)
    check(isinstance(page, ImagePage) and len(page.items) == 1, f"auto images: {page}")
    r = page.items[0].report
    check(isinstance(r, ImageReport) and r.target == 60 and r.max_bytes == 30000, f"auto report: {r}")
    check(isinstance(r.score, float) and r.tries >= 1, f"auto report: {r}")
    check(r.binding in (BindingLimit.TARGET, BindingLimit.MAX_BYTES), f"auto report: {r}")
    check(r.output_bytes <= 30000 and not r.downscaled, f"over the cap or downscaled: {r}")
    print(f"client roundtrip: auto:60 + 30KB chose q{r.quality} ({r.binding}, score {r.score:.1f})")

    # 5. A bad CSV: 422 parsed as a Problem listing the line.
    bad = upload(client, "Serial Number,Product Name,Input Image Urls\n1,SKU1,not-a-url\n")
    check(isinstance(bad, Problem) and bad.status == 422, f"bad CSV: {bad}")
    check(bad.errors is not UNSET and bad.errors[0].line == 2, f"bad CSV problems: {bad}")
    print("client roundtrip: invalid CSV answered 422 with its line")

    # 6. Requests for schemathesis: one with a failed image and a webhook that fails
    # (the image server answers POST with 501), one still retrying a refused download.
    failed = accepted(
        client,
        f"S. No.,Product Name,Input Image Urls\n9,SKU9,{img}/{PHOTOS[0]},{img}/missing.jpg\n",
        webhook_url=f"{img}/hook",
    )
    pending = accepted(
        client, f"S. No.,Product Name,Input Image Urls\n8,SKU8,{args.dead_url}\n"
    )
    done = wait_final(client, str(failed.request_id), timeout=60)
    check(done.status == RequestStatus.COMPLETEDWITHERRORS, f"seeded request: {done}")
    with open(args.ids_out, "w") as f:
        for i in (rid, failed.request_id, pending.request_id):
            f.write(f'"{i}"\n')
    print("client roundtrip: OK")


if __name__ == "__main__":
    main()

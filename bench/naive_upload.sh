#!/usr/bin/env bash
# The naive floor of the bulk benchmark: upload files one at a time with curl, the four calls
# of CONTRACT.md per file (reserve, push to the signed URL, complete, attach), JSON read by jq.
# usage: FLORA_API_KEY=... naive_upload.sh BASE_URL WORKSPACE_ID PROJECT_ID FILE...
set -euo pipefail
base=$1 workspace=$2 project=$3
shift 3
auth="Authorization: Bearer $FLORA_API_KEY"  # given to curl on stdin (-H @-), never on argv

for file in "$@"; do
    name=$(basename "$file")
    read -r key < /proc/sys/kernel/random/uuid
    body=$(printf '{"source":"signed-url","workspace_id":"%s","file_name":"%s","content_type":"image/png"}' \
        "$workspace" "$name")
    reply=$(curl -fsS -X POST "$base/assets" -H @- -H "Idempotency-Key: $key" \
        -H 'Content-Type: application/json' --data "$body" <<<"$auth")
    asset=$(jq -r .asset_id <<<"$reply")
    url=$(jq -r .upload.url <<<"$reply")
    field=$(jq -r .upload.file_field <<<"$reply")
    form=()
    while IFS=$'\t' read -r k v; do
        form+=(--form-string "$k=$v")  # -F without curl's @file / <file interpretation
    done < <(jq -r '.upload.form_fields | to_entries[] | "\(.key)\t\(.value)"' <<<"$reply")
    curl -fsS -o /dev/null "${form[@]}" -F "$field=@$file;type=image/png" "$url"
    curl -fsS -o /dev/null -X POST "$base/assets/$asset/complete" -H @- <<<"$auth"
    read -r key < /proc/sys/kernel/random/uuid
    curl -fsS -o /dev/null -X POST "$base/projects/$project/assets/$asset/attach" -H @- \
        -H "Idempotency-Key: $key" <<<"$auth"
done

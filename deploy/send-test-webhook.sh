#!/usr/bin/env bash
# Sends one signed test delivery to a running ingress, signed the way Finch
# signs (crates/finch-core/src/signature.rs): HMAC-SHA256 over
# "{event id}.{timestamp}.{body}" keyed with the base64-decoded secret, sent
# as "Finch-Signature: v1,<base64>".
#
#   deploy/send-test-webhook.sh [URL]          default http://127.0.0.1:8080/webhooks/finch
#
# Environment:
#   FINCH_WEBHOOK_SECRET  defaults to the development-only secret from
#                         deploy/docker-compose.yml; the first entry of a
#                         comma-separated list is used.
#   EVENT_TYPE            default directory.updated
#   CONNECTION_ID         default dev-connection
#   EVENT_ID, TIMESTAMP   fixed values for a reproducible signature
#   DRY_RUN=1             print the headers and body instead of sending
#
# Needs bash, openssl, base64, od and curl (curl only when sending).
set -euo pipefail

url=${1:-http://127.0.0.1:8080/webhooks/finch}
secret=${FINCH_WEBHOOK_SECRET:-ZmluY2gtd2ViaG9va3MtZGV2LW9ubHktc2VjcmV0ISE=}
secret=${secret%%,*}
secret=${secret#whsec_}
event_type=${EVENT_TYPE:-directory.updated}
connection_id=${CONNECTION_ID:-dev-connection}
timestamp=${TIMESTAMP:-$(date +%s)}
event_id=${EVENT_ID:-msg_test_${timestamp}_${RANDOM}}

body=$(printf '{"event_type":"%s","connection_id":"%s","company_id":"dev-company","data":{"individual_id":"dev-individual"}}' \
    "$event_type" "$connection_id")

key_hex=$(printf '%s' "$secret" | base64 -d | od -An -v -tx1 | tr -d ' \n')
signature=$(printf '%s.%s.%s' "$event_id" "$timestamp" "$body" \
    | openssl dgst -sha256 -mac HMAC -macopt "hexkey:${key_hex}" -binary \
    | base64 | tr -d '\n')

if [[ ${DRY_RUN:-0} == 1 ]]; then
    printf 'finch-event-id: %s\nfinch-timestamp: %s\nfinch-signature: v1,%s\n\n%s\n' \
        "$event_id" "$timestamp" "$signature" "$body"
    exit 0
fi

echo "POST $url (finch-event-id: $event_id)" >&2
curl --silent --show-error --fail-with-body --include \
    --request POST "$url" \
    --header 'content-type: application/json' \
    --header "finch-event-id: ${event_id}" \
    --header "finch-timestamp: ${timestamp}" \
    --header "finch-signature: v1,${signature}" \
    --data-binary "$body"
echo

-- wrk script: POST /publish of one 30-byte message per request (the
-- single form, as a baseline for the batch scripts).
wrk.method = "POST"
wrk.path = "/publish"
wrk.body = '{"body":"message 000001 of the batch..."}'
wrk.headers["Content-Type"] = "application/json"

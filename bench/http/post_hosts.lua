-- wrk script: POST /hosts with a small JSON body and the service token from BENCH_TOKEN.
wrk.method = "POST"
wrk.body = '{"env": {"BENCH": "1"}, "expires_at": null}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")

"""Loopback simulator of the Replicate, Stability AI (v2beta) and Suno (sunoapi.org) HTTP APIs.

The end-to-end tests, `make demo` and the benchmarks point the daemon's
`REPLICATE_BASE_URL`, `STABILITY_BASE_URL` and `SUNO_BASE_URL` at one simulator (all three
share a port; the paths do not overlap) and run it with `POLLER_ALLOW_PRIVATE_DOWNLOADS=true`,
because result URLs are `http://127.0.0.1:PORT/cdn/...` on the same server. It imports
nothing from `poller`, `providers` or `storage`: it is a fake of the vendors, not of us.

Running it
==========

In-process (tests)::

    from simulator.server import SimulatorServer
    from simulator.config import SimulatorConfig, FaultRates

    with SimulatorServer(SimulatorConfig(seed=7, complete_after_polls=2)) as sim:
        sim.base_url            # "http://127.0.0.1:<port>"
        sim.stats(); sim.jobs(); sim.job(job_id); sim.complete_job(job_id, "fail")
        sim.set_faults(FaultRates(p_5xx=0.2)); sim.reset()

As a process (demo, e2e, bench)::

    python -m simulator --port 0 --seed 1 --ready-file /tmp/sim.url \
        [--complete-after-polls N] [--complete-after-seconds T] [--duration-jitter F] \
        [--fault-5xx P] [--fault-429 P] [--fault-slow P] [--fault-malformed P] \
        [--slow-seconds S] [--retry-after S] [--fault-scope poll,cancel,submit,cdn] \
        [--rate-limit replicate=40 ...] [--scenario TOKENS] [--image-size 64x64] \
        [--video-seconds 2] [--audio-seconds 5] [--cdn-host 127.0.0.2] [--no-uvloop]

It prints the base URL on stdout when listening (and writes it to `--ready-file`), then
serves until SIGTERM/SIGINT and exits 0. Exit 2: invalid options.

Auth: every vendor endpoint needs `Authorization: Bearer <any non-empty token>`; without
it the vendor's own 401 shape comes back (Suno: HTTP 200, body `code` 401). Stability
results are visible only to the token that submitted them (404 otherwise).

Job timing
==========

A job is done after N status polls or T seconds after submission, whichever comes first
(server defaults N=3, T off; a job's `polls:`/`seconds:` tokens replace both). Progress
is mapped onto each vendor's statuses: Replicate `starting` for the first half, then
`processing`; Stability `202 in-progress` until done; Suno PENDING, TEXT_SUCCESS,
FIRST_SUCCESS in thirds (use `polls:4` to see every one of them by polling). Replicate
`Cancel-After` is honoured (deadline before start → `aborted`, after → `canceled`) and so
is `POST /v1/predictions/{id}/cancel`. Nothing happens in the background, so 10,000 idle
jobs cost nothing; `GET /_sim/jobs` reports when each became done and when a poll first
reported it, for detection-latency measurements.

Scenario selectors
==================

Where: Replicate `input.sim_scenario`; Stability form field `sim_scenario`; Suno body field
`sim_scenario`; or, for all three, `[sim:TOKENS]` inside the prompt (Suno also style/title);
plus the server-wide `--scenario`, applied first. Tokens are separated by commas or spaces,
arguments by colons; later tokens win. Unknown tokens are rejected as a validation error
(Replicate 422, Stability 400, Suno body code 400).

Outcome (default `success`):

* `fail` - Replicate `failed` with an E1000 error; Stability 200 with finish reason `ERROR`;
  Suno `GENERATE_AUDIO_FAILED` (errorCode 500).
* `moderation` - Replicate `failed` with "NSFW content detected…"; Stability **403**
  `content_moderation` at submit (no job); Suno `SENSITIVE_WORD_ERROR` (errorCode 400).
* `filtered` - Stability 200 with finish reason `CONTENT_FILTERED` (bytes still sent);
  Replicate and Suno as `moderation`.
* `expired` - results gone: Replicate `succeeded` with `output: null, data_removed: true`;
  Stability 404 once done; every vendor's CDN files 404.
* `create_failed` - Suno `CREATE_TASK_FAILED`; elsewhere as `fail`.
* `callback_exception` - Suno `CALLBACK_EXCEPTION` with complete clips; elsewhere success.
* `stuck` - never finishes (stays running): for timeout / cancel tests.
* `unknown_status` - non-terminal polls report an unrecognised status (Replicate `queued`,
  Stability 202 `{"status":"queued"}`, Suno `QUEUED_FOR_REVIEW`).

Timing: `polls:N` (done on the N-th status poll), `seconds:T` (done T s after submit;
`seconds:0` = done at the first poll).

Outputs:

* `multi:N` - N outputs (default 2): Replicate list of N URLs, Suno N clips (default already
  2), Stability always 1. Replicate also honours `input.num_outputs`.
* `shape:string|list|object|data` - Replicate `output` shape. Default: a list for images or
  when there are several outputs / `num_outputs` is given, else a string. `object` is
  `{"media": url, "media_1": url, …}`; `data` gives inline `data:<mime>;base64,…` URLs.
* `format:png|jpeg|webp|mp4|mp3|wav|bin` - file format. Defaults: Replicate from
  `input.output_format`, else the model name (video → mp4; audio/music/speech/tts → mp3),
  else png; Stability from the endpoint and its `output_format` (image-to-video → mp4,
  audio → mp3); Suno mp3.
* `size:WxH` (images/video; odd video sizes round up to even), `duration:S` (seconds).
* `large:BYTES` - every output is exactly BYTES long (`2147483648`, `512M`, `2G`), streamed
  in constant memory: a valid small file of the format followed by deterministic padding
  (inside a `free` box for MP4, so it stays a valid MP4).
* `static` - outputs' bytes do not depend on the job (identical across jobs: dedup tests).
* `predict_time:X` - Replicate `metrics.predict_time` (default: deterministic 0.5-10 s).

Per-job faults (request numbers count this job's status requests, faulted ones included):

* `poll_error:STATUS[:K]` - the first K (default 1) status polls get STATUS in the vendor's
  shape (429 adds Retry-After; Suno puts STATUS in the body `code` with HTTP 200) and do not
  count as polls. `poll_error:404:2` emulates Replicate's transient 404 after create.
* `poll_malformed[:K]` - the K polls after those get a 200 with truncated JSON (the poll
  still counts).
* `poll_slow:S[:K]` - delay status replies by S seconds (the first K, default all).
* `submit_error:STATUS` - the create call fails with STATUS. 4xx: no job is created. 5xx:
  the job **is** created first (an ambiguous failure, as after a timeout).
* `submit_slow:S`, `submit_malformed` - slow / truncated-JSON create reply (job created).
* `cdn_error:STATUS[:K]` - the first K downloads of each file get STATUS.
* `cdn_truncate[:K]` - the next K downloads of each file stop halfway through the declared
  Content-Length and the connection is closed.
* `cdn_slow:S` - every download of the job's files waits S seconds first.
* `cdn_wrong_type` - the CDN's Content-Type lies (type must be sniffed from the bytes).

Random faults (`FaultRates` / `--fault-*`): per request in the fault scope (default status
polls and cancels; add `submit` and `cdn` explicitly), one deterministic draw picks 429
(Replicate/Stability HTTP 429 + Retry-After; Suno HTTP 200 body code 430), 5xx (500/503 in
the vendor's shape, 502/504 as an HTML proxy page) or malformed JSON; a second draw adds
`slow_s` of latency. `--rate-limit PROVIDER=RPS` enforces a token bucket per provider.

Other endpoints and files
=========================

* Result files: `/cdn/{job}/{n}.{ext}`, Suno covers `/cdn/{job}/cover-{n}.jpeg` and stream
  URLs `/cdn/{job}/stream-{n}.mp3`; `/cdn/large?bytes=N&format=bin|png|mp4|…` for a
  standalone file of N bytes (the 2 GiB ingest benchmark; compare with
  `curl -s URL | sha256sum`). Media are real and decodable: PNG (zlib), JPEG/WebP (Pillow),
  H.264 MP4 (hand-written, I_PCM keyframe + skipped P frames), silent CBR MP3 with a Xing
  Info frame (exact duration for mutagen/MediaInfo), PCM WAV.
* Control: `/_sim/health`, `/_sim/stats`, `/_sim/jobs[/{id}]`, `POST /_sim/jobs/{id}/complete`,
  `POST /_sim/faults`, `POST /_sim/reset` (see `simulator.app`).
* Also emulated: Replicate `GET /v1/predictions` (list, `created_after`/`created_before`,
  `cursor`), `Prefer: wait[=N]` (held while a time-based job can finish in the window);
  Stability synchronous endpoints (the reply is the file); Suno `GET /api/v1/generate/credit`.
  Not emulated: webhooks/callbacks (accepted, never delivered), result retention clocks.

Determinism: with `--seed`, ids, seeds, default predict times, jitter and every random fault
decision are hashes of the seed and the job / request they concern, so they do not depend
on how concurrent requests interleave (only on the order jobs are created).
"""

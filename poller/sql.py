"""Every SQL statement the daemon's hot path runs, in one place.

Conventions: all time arithmetic uses the database clock (``now()``), every write after a
claim is fenced on ``(id, lease_version, lease_owner)``, and nothing here holds a transaction
across network I/O. Parameters are psycopg named placeholders.
"""

ACTIVE = "('pending','processing')"

# Jobs whose provider is known but not served by this replica (no credentials, at its in-flight
# cap, out of tokens) or paused for every replica (429 lockout, bad credentials) are skipped by
# the claim, except a paused provider's jobs past their deadline: a pause may last a day, the
# deadline must still end the job (its step times out before any call to the provider). A
# job without a deadline_at yet (inserted during the pause: only a step records it) is claimed
# once too, so its step records the deadline and reschedules it for then without calling the
# provider; skipped instead, it outlived created_at + timeout_ms by the whole pause. Jobs
# naming a provider nobody knows *are* claimed, so they can be failed with a clear message.
#
# Paused providers come from the STABLE function app.paused_providers(), which the planner
# evaluates while making the (custom) plan, so it estimates the filter from the real list.
# A correlated NOT EXISTS (13 ms instead of 1.6 ms at 10,000 due rows) and an uncorrelated
# ARRAY(SELECT …) (8 ms instead of 1.5 ms) both hid the list and made it sort every due row.
_CLAIMABLE = f"""
    j.status IN {ACTIVE} AND j.next_poll_at <= now()
    AND j.provider_id <> ALL(%(excluded)s::text[])
    AND (j.provider_id <> ALL(app.paused_providers())
         OR j.deadline_at IS NULL OR j.deadline_at <= now())
"""

# Round-robin across tenants: a loose index scan finds the tenants with due work, each tenant
# offers its share of the batch (at least :per_tenant rows, locked with SKIP LOCKED), and rows
# are ranked so every tenant's first row comes before any tenant's second. A flood from one
# tenant therefore cannot push another tenant's due jobs out of the batch. One statement,
# autocommit; rows offered but not picked are unlocked when it ends.
#
# The loose scan orders by (tenant_id, next_poll_at), which only the partial index over active
# rows provides: ordered by tenant_id alone, the planner could also walk the full tenant_id
# index and filter out every finished job of the first tenant on each claim (it did, whenever
# the statistics still counted those jobs as active: 0.5 → 2.5 ms per claim during a drain).
CLAIM = f"""
WITH RECURSIVE tenants AS (
    (SELECT j.tenant_id FROM app.generation_jobs j
      WHERE {_CLAIMABLE} ORDER BY j.tenant_id, j.next_poll_at LIMIT 1)
    UNION ALL
    SELECT (SELECT j.tenant_id FROM app.generation_jobs j
             WHERE {_CLAIMABLE} AND j.tenant_id > t.tenant_id
             ORDER BY j.tenant_id, j.next_poll_at LIMIT 1)
      FROM tenants t WHERE t.tenant_id IS NOT NULL
),
share AS (
    SELECT greatest(%(per_tenant)s,
                    ceil(%(limit)s::float8 / greatest(count(*), 1)))::int AS n
      FROM tenants WHERE tenant_id IS NOT NULL
),
offered AS MATERIALIZED (
    SELECT c.id, c.next_poll_at, c.provider_id,
           row_number() OVER (PARTITION BY c.tenant_id ORDER BY c.next_poll_at) AS rn
      FROM tenants t CROSS JOIN share
      CROSS JOIN LATERAL (
          SELECT j.id, j.tenant_id, j.next_poll_at, j.provider_id FROM app.generation_jobs j
           WHERE j.tenant_id = t.tenant_id AND {_CLAIMABLE}
           ORDER BY j.next_poll_at LIMIT share.n
           FOR UPDATE SKIP LOCKED) c
     WHERE t.tenant_id IS NOT NULL
),
-- :slots maps a provider close to its in-flight cap to the steps it may still start; a batch
-- takes no more of its rows than that (a provider at its cap is in :excluded already). Rows
-- offered beyond it stay due for the next round, which excludes that provider.
capped AS (
    SELECT id, next_poll_at, rn,
           row_number() OVER (PARTITION BY provider_id ORDER BY rn, next_poll_at) AS nth,
           coalesce((%(slots)s::jsonb ->> provider_id)::int, %(limit)s) AS slots
      FROM offered
),
picked AS (
    SELECT id, next_poll_at FROM capped WHERE nth <= slots
     ORDER BY rn, next_poll_at LIMIT %(limit)s
)
UPDATE app.generation_jobs j
   SET lease_owner = %(owner)s,
       lease_version = j.lease_version + 1,
       claim_count = j.claim_count + 1,
       next_poll_at = now() + make_interval(secs => %(lease_s)s)
  FROM picked
 WHERE j.id = picked.id
   AND j.id = ANY(ARRAY(SELECT id FROM picked))  -- lets the planner probe the primary key
RETURNING j.id, j.tenant_id, j.run_id, j.run_step_id, j.provider_id, j.provider_job_id,
          j.media_type, j.status, j.poll_interval_ms, j.timeout_ms, j.attempts,
          j.input_params, j.created_at, j.started_at, j.deadline_at, j.submit_started_at,
          j.provider_job_id_recorded_at, j.lease_version, j.claim_count, j.error_count,
          picked.next_poll_at, now()
"""

# Batched write-back of every outcome that is not a completion with artifacts, the rows as one
# JSON array (keys missing from a row are NULL). Rows whose (id, lease_version, lease_owner)
# no longer match are simply not returned: lease lost.
WRITE_BACK = f"""
WITH r AS MATERIALIZED (
    SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb)
        AS r(id uuid, version bigint, status text, delay_s float8, polls int, started bool,
             error_count int, last_error text, error_message text, cost_usd numeric,
             deadline_at timestamptz, release bool)
)
UPDATE app.generation_jobs j
   SET status = r.status,
       -- The step measured the delay against the deadline at claim time; a slow step (a
       -- long submit or download) must not push the next look past the deadline.
       next_poll_at = CASE WHEN r.status IN {ACTIVE}
                           THEN least(now() + make_interval(secs => r.delay_s),
                                      coalesce(j.deadline_at, r.deadline_at)
                                      + interval '50 milliseconds')
                           ELSE now() END,
       lease_owner = NULL,
       claim_count = CASE WHEN r.release THEN greatest(j.claim_count - 1, 0) ELSE 0 END,
       attempts = j.attempts + r.polls,
       error_count = r.error_count,
       last_error = r.last_error,
       error_message = CASE WHEN r.status IN {ACTIVE} THEN j.error_message
                            ELSE r.error_message END,
       cost_usd = coalesce(r.cost_usd, j.cost_usd),
       deadline_at = coalesce(j.deadline_at, r.deadline_at),
       -- Only when the provider reported the job running or finished (the step's flag): a
       -- refused submit or a job timed out while queued never started.
       started_at = CASE WHEN j.started_at IS NULL AND r.started
                         THEN now() ELSE j.started_at END,
       completed_at = CASE WHEN r.status IN {ACTIVE} THEN NULL ELSE now() END
  FROM r
 WHERE j.id = r.id AND j.lease_version = r.version AND j.lease_owner = %(owner)s
   -- The planner takes a set-returning function for 100 rows and lease_owner = … for 1, so
   -- without this it scanned the whole table (2.5 ms instead of 0.2 for 12 rows at 10,000).
   AND j.id = ANY(ARRAY(SELECT id FROM r))
RETURNING j.id
"""

MARK_SUBMIT_STARTED = """
UPDATE app.generation_jobs
   SET submit_started_at = now(),
       deadline_at = coalesce(deadline_at, %(deadline)s)
 WHERE id = %(id)s AND lease_version = %(version)s AND lease_owner = %(owner)s
RETURNING id
"""

# The id is persisted the moment the provider returns it: a crash after this never resubmits.
# Its time starts the early-404 window (DESIGN §10 "a 404 within 30 s of submit"): the vendor
# can only be expected to show a job once it has answered the create call, however long that
# call took, so the window is not counted from submit_started_at.
RECORD_SUBMISSION = """
UPDATE app.generation_jobs
   SET provider_job_id = %(provider_job_id)s, provider_job_id_recorded_at = now()
 WHERE id = %(id)s AND lease_version = %(version)s AND lease_owner = %(owner)s
RETURNING id
"""

CLEAR_SUBMIT_MARK = """
UPDATE app.generation_jobs SET submit_started_at = NULL
 WHERE id = %(id)s AND lease_version = %(version)s AND lease_owner = %(owner)s
RETURNING id
"""

EXTEND_LEASES = """
UPDATE app.generation_jobs j
   SET next_poll_at = now() + make_interval(secs => %(lease_s)s)
  FROM unnest(%(ids)s::uuid[], %(versions)s::bigint[]) AS r(id, version)
 WHERE j.id = r.id AND j.lease_version = r.version AND j.lease_owner = %(owner)s
RETURNING j.id
"""

SET_TENANT = "SELECT set_config('app.current_tenant_id', %(tenant)s, true)"

INSERT_ARTIFACTS = """
INSERT INTO app.artifacts
       (id, tenant_id, run_id, skill_id, type, uri, content_hash, size_bytes, filename, metadata)
SELECT a.id, %(tenant)s, %(run_id)s,
       coalesce((SELECT s.skill_id FROM app.run_steps s WHERE s.id = %(run_step_id)s),
                %(provider_id)s),
       a.type, a.uri, a.content_hash, a.size_bytes, a.filename, a.metadata
  FROM unnest(%(ids)s::uuid[], %(types)s::text[], %(uris)s::text[], %(hashes)s::text[],
              %(sizes)s::bigint[], %(filenames)s::text[], %(metadatas)s::jsonb[])
       AS a(id, type, uri, content_hash, size_bytes, filename, metadata)
"""

COMPLETE = """
UPDATE app.generation_jobs
   SET status = 'completed', result_uri = %(result_uri)s, artifact_id = %(artifact_id)s,
       artifact_ids = %(artifact_ids)s, cost_usd = %(cost_usd)s,
       attempts = attempts + %(polls)s, error_count = 0, last_error = NULL,
       error_message = NULL, lease_owner = NULL, claim_count = 0,
       started_at = coalesce(started_at, now()), completed_at = now(), next_poll_at = now(),
       deadline_at = coalesce(deadline_at, %(deadline)s)
 WHERE id = %(id)s AND lease_version = %(version)s AND lease_owner = %(owner)s
RETURNING id
"""

# Shortest wait until anything this replica could claim becomes due (or its lease expires).
# The claim's provider filter: counting rows the claim skips (a paused provider's, one at its
# cap) made the loop see work overdue and claim every 20 ms for the whole pause. A paused
# provider's jobs that pass their deadline are left out too; the loop's idle cap
# (POLLER_IDLE_POLL_MAX_S) bounds how late the claim then finds them.
NEXT_DUE = f"""
SELECT extract(epoch FROM (min(j.next_poll_at) - now()))::float8
  FROM app.generation_jobs j
 WHERE j.status IN {ACTIVE}
   AND j.provider_id <> ALL(%(excluded)s::text[] || app.paused_providers())
"""

ANY_ACTIVE = f"""
SELECT EXISTS (SELECT 1 FROM app.generation_jobs j
                WHERE j.status IN {ACTIVE} AND j.provider_id <> ALL(%(excluded)s::text[]))
"""

# Token bucket shared by all replicas: refill by elapsed database time, grant up to :want.
TAKE_TOKENS = """
WITH cur AS (
    SELECT provider_id,
           least(capacity, tokens + refill_per_s *
                 greatest(0, extract(epoch FROM clock_timestamp() - refreshed_at))) AS avail,
           refill_per_s, paused_until
      FROM app.provider_budgets WHERE provider_id = %(provider)s FOR UPDATE
), g AS (
    SELECT CASE WHEN paused_until > clock_timestamp() THEN 0
                ELSE greatest(0, least(%(want)s, floor(avail)))::int END AS granted
      FROM cur
)
UPDATE app.provider_budgets b
   SET tokens = cur.avail - g.granted, refreshed_at = clock_timestamp()
  FROM cur, g
 WHERE b.provider_id = cur.provider_id
RETURNING g.granted, cur.avail, cur.refill_per_s,
          extract(epoch FROM (b.paused_until - clock_timestamp()))::float8
"""

ENSURE_BUDGET = """
INSERT INTO app.provider_budgets (provider_id, tokens, capacity, refill_per_s)
VALUES (%(provider)s, %(capacity)s, %(capacity)s, %(refill)s)
ON CONFLICT (provider_id) DO UPDATE
   SET capacity = EXCLUDED.capacity, refill_per_s = EXCLUDED.refill_per_s
"""

PAUSE_PROVIDER = """
INSERT INTO app.provider_budgets (provider_id, tokens, capacity, refill_per_s,
                                  paused_until, pause_reason)
VALUES (%(provider)s, 0, 1, 1, now() + make_interval(secs => %(seconds)s), %(reason)s)
ON CONFLICT (provider_id) DO UPDATE
   SET paused_until = greatest(coalesce(app.provider_budgets.paused_until, now()),
                               now() + make_interval(secs => %(seconds)s)),
       pause_reason = EXCLUDED.pause_reason
"""

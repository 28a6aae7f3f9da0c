"""The Lua scripts behind `RedisStore`: every read-then-write is one script, so Redis runs it
atomically and replicas sharing one Redis never over-admit nor disagree about a breaker.

The arithmetic mirrors `memory.py` (same epsilon, same refund cap, same breaker rules).
Floats are stored and returned as strings formatted with `%.17g`, which round-trips an IEEE
double exactly; a Lua number returned bare would be truncated to an integer by Redis.
Time is always an argument (`now`), never the server's clock, like the rest of the store.
"""

from __future__ import annotations

_COMMON = """
local EPSILON, CLOCK_RESOLUTION_S = 1e-9, 1e-6
local function fmt(x) return string.format('%.17g', x) end
local function ttl_ms(seconds) return math.max(1000, math.ceil(seconds * 1000)) end
"""

# KEYS: one per limit, all in one hash slot. ARGV: mode ('admit' | 'check' | 'charge' |
# 'peek'), now, budget slack, then six per limit: kind ('rate' | 'budget'), capacity,
# period_s, period_end, cost, headroom (what 'admit' must leave after the cost; 0 for
# 'charge' and 'peek'). 'check' is 'admit' that takes nothing, its states as a refusal's:
# the limits of a later slot when an earlier one refused (redis_admission.py).
# Returns {refused (1-based index of the first limit without room, 0 if none), then three
# per limit: remaining (integer), reset_s, retry_after_s (strings)}.
LIMITS = (
    _COMMON
    + """
local mode, now, budget_slack = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local limits = {}
for i, key in ipairs(KEYS) do
  local a = 3 + (i - 1) * 6
  local l = {key = key, kind = ARGV[a + 1], cap = tonumber(ARGV[a + 2]),
             period = tonumber(ARGV[a + 3]), period_end = tonumber(ARGV[a + 4]),
             cost = tonumber(ARGV[a + 5]), rate = 0}
  l.need = l.cost + tonumber(ARGV[a + 6])
  if l.kind == 'budget' then
    l.room = l.cap - (tonumber(redis.call('GET', key)) or 0)
  else
    if l.period > 0 and l.cap > 0 then l.rate = l.cap / l.period end
    local h = redis.call('HMGET', key, 'tokens', 'updated')
    local tokens, updated = tonumber(h[1]), tonumber(h[2])
    if tokens == nil then
      l.room, l.updated = l.cap, now
    else
      l.room = math.min(l.cap, tokens + math.max(0, now - updated) * l.rate)
      l.updated = math.max(updated, now)
    end
  end
  l.slack = EPSILON + l.rate * CLOCK_RESOLUTION_S
  limits[i] = l
end

local function take(l)
  l.room = math.min(l.cap, l.room - l.cost)
  if l.kind == 'budget' then
    redis.call('SET', l.key, fmt(l.cap - l.room), 'PX', ttl_ms(l.period_end - now + budget_slack))
  else
    redis.call('HSET', l.key, 'tokens', fmt(l.room), 'updated', fmt(l.updated))
    local refill = l.period
    if l.rate > 0 then refill = (l.cap - l.room) / l.rate end
    redis.call('PEXPIRE', l.key, ttl_ms(refill + l.period))
  end
end

local function state(l, check_cost)
  local remaining = math.max(0, math.floor(l.room + l.slack))
  local short = check_cost and l.need > l.room + l.slack
  local reset, retry = 0, 0
  if l.kind == 'budget' then
    reset = math.max(0, l.period_end - now)
    if short then retry = reset end
  else
    if l.rate > 0 then reset = math.max(0, (l.cap - l.room) / l.rate) end
    if short then
      if l.rate > 0 then
        retry = math.max(0, (math.min(l.need, l.cap) - l.room) / l.rate)
      else
        retry = l.period
      end
    end
  end
  return remaining, fmt(reset), fmt(retry)
end

local refused = 0
if mode == 'admit' or mode == 'check' then
  for i, l in ipairs(limits) do
    if l.need > l.room + l.slack then refused = i; break end
  end
end
if (mode == 'admit' or mode == 'charge') and refused == 0 then
  for _, l in ipairs(limits) do take(l) end
end
local out = {refused}
for _, l in ipairs(limits) do
  local remaining, reset, retry = state(l, refused > 0 or mode == 'check')
  table.insert(out, remaining)
  table.insert(out, reset)
  table.insert(out, retry)
end
return out
"""
)

# Shared by the three breaker scripts. A breaker is a hash: state, failures (consecutive),
# open_until, probe_since (absent when no probe is out), wcalls and wfails (the counts in
# the failure-rate window, a list of 'time:ok' entries kept beside it).
_BREAKER = (
    _COMMON
    + """
local function load(key)
  local h = redis.call('HMGET', key, 'state', 'failures', 'open_until', 'probe_since')
  return {state = h[1] or 'closed', failures = tonumber(h[2]) or 0,
          open_until = tonumber(h[3]) or 0, probe_since = tonumber(h[4])}
end

-- {state, allowed, probe, open_until, consecutive failures}: an open breaker past its
-- cooldown, or a half-open one whose probe went stale, reads as half-open and allowed.
local function view(b, now, probe_timeout)
  if b.state == 'closed' then return {'closed', 1, 0, '0', b.failures} end
  if b.state == 'open' and now < b.open_until then
    return {'open', 0, 0, fmt(b.open_until), b.failures}
  end
  local free = b.state == 'open' or b.probe_since == nil
    or now >= b.probe_since + probe_timeout
  return {'half_open', free and 1 or 0, 0, fmt(b.open_until), b.failures}
end
"""
)

# KEYS: breaker. ARGV: now, probe_timeout_s, ttl_s.
BREAKER_ACQUIRE = (
    _BREAKER
    + """
local now, probe_timeout, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = load(KEYS[1])
local v = view(b, now, probe_timeout)
if v[1] == 'half_open' and v[2] == 1 then
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_since', fmt(now))
  redis.call('PEXPIRE', KEYS[1], ttl_ms(math.max(0, b.open_until - now) + ttl))
  v[3] = 1
end
return v
"""
)

# KEYS: breaker, its window (one hash tag: `{deployment:<name>}`). ARGV: now, ok (1 | 0),
# retry_after_s ('' when none), failures, cooldown_s, failure_rate ('' when none), window_s,
# min_calls, probe_timeout_s, window cap, ttl_s, probe (1 | 0: this is the half-open probe's
# outcome). Returns the view after it.
BREAKER_RECORD = (
    _BREAKER
    + """
local key, window = KEYS[1], KEYS[2]
local now, ok = tonumber(ARGV[1]), ARGV[2] == '1'
local retry_after, threshold, cooldown = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local failure_rate, window_s, min_calls = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local probe_timeout, cap, ttl = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local probe = ARGV[12] == '1'
local b = load(key)

local function open()
  b.state, b.open_until, b.probe_since = 'open', now + math.max(cooldown, retry_after or 0), nil
end

-- Append to the sliding window, dropping outcomes older than window_s (and past the cap)
-- while keeping the counts in step. Returns the calls and failures now in the window.
local function push(calls, fails)
  redis.call('RPUSH', window, fmt(now) .. (ok and ':1' or ':0'))
  calls = calls + 1
  if not ok then fails = fails + 1 end
  while true do
    local head = redis.call('LINDEX', window, 0)
    if not head then break end
    local sep = string.find(head, ':', 1, true)
    if tonumber(string.sub(head, 1, sep - 1)) > now - window_s and calls <= cap then break end
    redis.call('LPOP', window)
    calls = calls - 1
    if string.sub(head, sep + 1) == '0' then fails = fails - 1 end
  end
  return calls, fails
end

if b.state == 'half_open' then
  -- Only the probe's outcome moves it; any other is a late one, from a call sent before
  -- the breaker opened, and changes nothing.
  if not probe then return view(b, now, probe_timeout) end
  if ok then
    redis.call('DEL', key, window)
    return view({state = 'closed', failures = 0, open_until = 0}, now, probe_timeout)
  end
  b.failures = b.failures + 1
  open()
elseif b.state == 'open' then
  -- A late outcome of a call sent before the breaker opened: it may lengthen the open
  -- period (a 429's Retry-After) but never closes the breaker; only the probe does.
  if not ok then
    b.failures = b.failures + 1
    if retry_after then b.open_until = math.max(b.open_until, now + retry_after) end
  end
else
  if ok then b.failures = 0 else b.failures = b.failures + 1 end
  local tripped = false
  if failure_rate then
    local h = redis.call('HMGET', key, 'wcalls', 'wfails')
    local calls, fails = push(tonumber(h[1]) or 0, tonumber(h[2]) or 0)
    redis.call('HSET', key, 'wcalls', calls, 'wfails', fails)
    redis.call('PEXPIRE', window, ttl_ms(window_s + ttl))
    tripped = calls >= math.max(1, min_calls) and fails / calls >= failure_rate
  end
  if not ok and (b.failures >= threshold or tripped) then open() end
end

redis.call('HSET', key, 'state', b.state, 'failures', b.failures, 'open_until', fmt(b.open_until))
if b.probe_since == nil then redis.call('HDEL', key, 'probe_since') end
redis.call('PEXPIRE', key, ttl_ms(math.max(0, b.open_until - now) + ttl))
return view(b, now, probe_timeout)
"""
)

# KEYS: breaker. No ARGV. A half-open breaker's probe slot is freed; nothing else changes.
BREAKER_RELEASE = """
if redis.call('HGET', KEYS[1], 'state') == 'half_open' then
  redis.call('HDEL', KEYS[1], 'probe_since')
end
"""

# KEYS: breakers, all in one hash slot. ARGV: now, probe_timeout_s. Read-only: one view
# per key.
BREAKER_VIEWS = (
    _BREAKER
    + """
local now, probe_timeout = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for i, key in ipairs(KEYS) do out[i] = view(load(key), now, probe_timeout) end
return out
"""
)

# KEYS: the latency hash. ARGV: deployment, seconds, alpha, ttl_s.
OBSERVE_LATENCY = (
    _COMMON
    + """
local seconds, alpha = tonumber(ARGV[2]), tonumber(ARGV[3])
local previous = tonumber(redis.call('HGET', KEYS[1], ARGV[1]))
if previous then seconds = alpha * seconds + (1 - alpha) * previous end
redis.call('HSET', KEYS[1], ARGV[1], fmt(seconds))
redis.call('PEXPIRE', KEYS[1], ttl_ms(tonumber(ARGV[4])))
"""
)

# KEYS: a deployment's list of recent calls (`{deployment:<name>}:calls`). ARGV: the entry
# ('<at>,<ok 1|0>,<ms>,<first token ms>', a number left empty when there is none), cap,
# ttl_s. Newest first, trimmed to the last `cap`; the list expires when nobody calls.
RECORD_CALL = (
    _COMMON
    + """
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('PEXPIRE', KEYS[1], ttl_ms(tonumber(ARGV[3])))
"""
)

# KEYS: the in-flight hash. ARGV: deployment, delta, ttl_s. A count at or below 0 is
# removed, so an unmatched -1 never makes a deployment look idler than idle.
ADD_IN_FLIGHT = (
    _COMMON
    + """
local count = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if count <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
redis.call('PEXPIRE', KEYS[1], ttl_ms(tonumber(ARGV[3])))
"""
)

# KEYS: one sorted set per CONCURRENCY limit (members: holders, scores: lease ends), all in
# one hash slot. ARGV: now, holder, take ('1'; '0' only checks), then three per limit:
# capacity, lease_s, headroom (slots that must stay free after this one). Leases that have
# passed are dropped first (a replica that died holding slots); then, all or nothing, the
# holder takes (or renews) one slot of each. Returns {refused (1-based, 0 if none), then
# the slots held per limit after it, then per limit 1 if the holder held it before (a
# refund must not give back a slot this call only renewed)}. The set expires with its
# longest lease.
ACQUIRE_SLOTS = (
    _COMMON
    + """
local now, holder, take = tonumber(ARGV[1]), ARGV[2], ARGV[3] == '1'
local held, had, refused = {}, {}, 0
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now))
  held[i] = redis.call('ZCARD', key)
  had[i] = redis.call('ZSCORE', key, holder) and 1 or 0
  local cap, headroom = tonumber(ARGV[1 + i * 3]), tonumber(ARGV[3 + i * 3])
  if refused == 0 and held[i] + headroom >= cap and had[i] == 0 then refused = i end
end
if refused == 0 and take then
  for i, key in ipairs(KEYS) do
    local lease = tonumber(ARGV[2 + i * 3])
    redis.call('ZADD', key, fmt(now + lease), holder)
    held[i] = redis.call('ZCARD', key)
    if redis.call('PTTL', key) < ttl_ms(lease) then redis.call('PEXPIRE', key, ttl_ms(lease)) end
  end
end
local out = {refused}
for i = 1, #KEYS do table.insert(out, held[i]) end
for i = 1, #KEYS do table.insert(out, had[i]) end
return out
"""
)

# KEYS: the sorted sets of `ACQUIRE_SLOTS`. ARGV: holder. Its slots are given back.
RELEASE_SLOTS = """
for _, key in ipairs(KEYS) do redis.call('ZREM', key, ARGV[1]) end
"""

"""The Lua scripts behind `RedisMeta`: every read-then-write is one script, so Redis runs it
atomically and replicas sharing one Redis never claim one chunk twice nor record a line twice.

Owner indexes are sorted sets whose members are `<created_at, 12 digits>:<id>`, all scored
0, so `ZRANGEBYLEX` orders them by (created_at, id) exactly and a cursor is the member of
the record it names. On Redis Cluster no script touches two hash slots: files, their
indexes and the expiry set share `{files}`; a batch's record and line state share
`{batch:<id>}`; batch indexes and the active set share `{batches}` (redis_meta.py). Times
(lease ends) are formatted with `%.17g`, which round-trips an IEEE double; Redis would
format a bare Lua number with 14 digits. Time is always an argument (`now`), never the
server's clock.
"""

from __future__ import annotations

from policies.storage.base import ACTIVE

_COMMON = """
local function fmt(x) return string.format('%.17g', x) end
"""

# `ended(record)`: the batch has a record (a hash with its `status`) and it has ended. Its
# line state is dropped then; a late line or claim would bring it back, never to be dropped.
_ENDED = (
    "local ACTIVE = {"
    + ", ".join(f"['{status}'] = true" for status in sorted(ACTIVE))
    + """}
local function ended(record)
  local status = redis.call('HGET', record, 'status')
  return status and not ACTIVE[status]
end
"""
)

# Files are indexed twice: by owner (`files:<owner>`) and by purpose and owner
# (`files_purpose:<purpose>:<owner>`; purposes hold no ':'), so a listing filtered by
# purpose reads only what it returns. A replaced record's old entries go first, so a file
# whose owner or time changed is listed once, where it now is; their keys are only known
# once the old record is read, so they are built here from the prefixes.
_FILE_INDEXES = """
local function unindex(record, prefix, purpose_prefix)
  local old = redis.call('HMGET', record, 'owner', 'member', 'purpose')
  if not old[1] then return false end
  redis.call('ZREM', prefix .. old[1], old[2])
  redis.call('ZREM', purpose_prefix .. old[3] .. ':' .. old[1], old[2])
  return true
end
"""

# KEYS: record hash, owner index, purpose index, expiring (zset id -> expires_at).
# ARGV: json, owner, member, purpose, the owner index prefix ('turnout:files:'), the
# purpose index prefix, id, expires_at ('' when it never expires).
PUT_FILE = (
    _FILE_INDEXES
    + """
unindex(KEYS[1], ARGV[5], ARGV[6])
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'owner', ARGV[2], 'member', ARGV[3],
           'purpose', ARGV[4])
redis.call('ZADD', KEYS[2], 0, ARGV[3])
redis.call('ZADD', KEYS[3], 0, ARGV[3])
if ARGV[8] == '' then
  redis.call('ZREM', KEYS[4], ARGV[7])
else
  redis.call('ZADD', KEYS[4], ARGV[8], ARGV[7])
end
"""
)

# KEYS: record hash, expiring. ARGV: the two index prefixes, id. Returns 1 when removed.
DELETE_FILE = (
    _FILE_INDEXES
    + """
if not unindex(KEYS[1], ARGV[1], ARGV[2]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[3])
return 1
"""
)

# KEYS: a files index, then the cursor's record hash when there is a cursor. ARGV: order
# ('asc' | 'desc'), limit, owner, and the record key of an id is ARGV[4] .. id (the files'
# slot: 'turnout:{files}:file:'). Returns the records' JSON in order. An unknown cursor, or
# one of another owner, gives nothing: its place in the order is unknown, and starting over
# would make a client's pagination loop. The records are read by keys built here, which
# Redis Cluster allows as they share the index's hash tag (`{files}`), so its slot.
LIST_FILES = """
local order, limit, owner = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local lo, hi = '-', '+'
if KEYS[2] then
  local c = redis.call('HMGET', KEYS[2], 'owner', 'member')
  if c[1] ~= owner then return {} end
  if order == 'asc' then lo = '(' .. c[2] else hi = '(' .. c[2] end
end
local members
if order == 'asc' then
  members = redis.call('ZRANGEBYLEX', KEYS[1], lo, hi, 'LIMIT', 0, limit)
else
  members = redis.call('ZREVRANGEBYLEX', KEYS[1], hi, lo, 'LIMIT', 0, limit)
end
local out = {}
for _, m in ipairs(members) do
  local json = redis.call('HGET', ARGV[4] .. string.sub(m, 14), 'json')
  if json then table.insert(out, json) end
end
return out
"""

# A batch's record is in its own slot (`{batch:<id>}`, with its line state), the owner
# indexes and the active set in another (`{batches}`), so putting a batch is two scripts:
# INDEX_BATCH first, then PUT_BATCH, so that a crash between them leaves an index entry
# without its record, which readers skip, never a record nobody can list or run.

# KEYS: owner index, active set. ARGV: member, active (1 | 0), created_at, id.
INDEX_BATCH = """
redis.call('ZADD', KEYS[1], 0, ARGV[1])
if ARGV[2] == '1' then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
else
  redis.call('ZREM', KEYS[2], ARGV[4])
end
"""

# KEYS: record hash. ARGV: json, owner, member, status. Returns the replaced record's
# {owner, member} ({} when there was none), whose index entry the caller drops if it moved.
PUT_BATCH = """
local old = redis.call('HMGET', KEYS[1], 'owner', 'member')
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'owner', ARGV[2], 'member', ARGV[3],
           'status', ARGV[4])
if old[1] then return old end
return {}
"""

# KEYS: record hash. ARGV: json, status, then the statuses expected. Returns the record's
# member (its created_at, for the active set) when written, false (nil: nothing written)
# when the stored status is not one of them or there is no such batch. The owner and
# created_at stay as put_batch set them. The caller then updates the active set.
UPDATE_BATCH = """
local stored = redis.call('HGET', KEYS[1], 'status')
if not stored then return false end
local expected = false
for i = 3, #ARGV do if ARGV[i] == stored then expected = true; break end end
if not expected then return false end
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'status', ARGV[2])
return redis.call('HGET', KEYS[1], 'member')
"""

# KEYS: leases (zset chunk -> lease end), holders (hash chunk -> holder), next (counter),
# the batch's record. ARGV: chunks, holder, now, lease_s. A finished chunk is in neither
# leases nor holders, so it is never taken again. Returns the chunk, or false (nil) when
# none is free (none ever, once the batch has ended).
CLAIM_CHUNK = (
    _COMMON
    + _ENDED
    + """
if ended(KEYS[4]) then return false end
local chunks, holder, now, lease = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]),
  tonumber(ARGV[4])
local chunk
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', fmt(now), 'LIMIT', 0, 1)
if #expired > 0 then
  chunk = tonumber(expired[1])
else
  chunk = tonumber(redis.call('GET', KEYS[3])) or 0
  if chunk >= chunks then return false end
  redis.call('SET', KEYS[3], chunk + 1)
end
redis.call('ZADD', KEYS[1], fmt(now + lease), chunk)
redis.call('HSET', KEYS[2], chunk, holder)
return chunk
"""
)

# KEYS: leases, holders. ARGV: chunk, holder, now, lease_s. Returns 1 when renewed.
RENEW_CHUNK = (
    _COMMON
    + """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZADD', KEYS[1], 'XX', fmt(tonumber(ARGV[3]) + tonumber(ARGV[4])), ARGV[1])
return 1
"""
)

# KEYS: leases, holders, finished (set), next. ARGV: chunk. Only a chunk claimed before.
FINISH_CHUNK = """
if tonumber(ARGV[1]) >= (tonumber(redis.call('GET', KEYS[4])) or 0) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
"""

# KEYS: the lease hash. ARGV: holder, now, lease_s, ttl_s. Taken when free, run out, or
# already held by `holder`. The key's TTL (lease + a day of the server's clock) only
# collects leases a dead replica never released; `expires` decides who holds it.
ACQUIRE = (
    _COMMON
    + """
local h = redis.call('HMGET', KEYS[1], 'holder', 'expires')
local now = tonumber(ARGV[2])
if h[1] and h[1] ~= ARGV[1] and tonumber(h[2]) > now then return 0 end
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'expires', fmt(now + tonumber(ARGV[3])))
redis.call('PEXPIRE', KEYS[1], math.ceil((tonumber(ARGV[3]) + tonumber(ARGV[4])) * 1000))
return 1
"""
)

# KEYS: the lease hash. ARGV: holder.
RELEASE = """
if redis.call('HGET', KEYS[1], 'holder') == ARGV[1] then redis.call('DEL', KEYS[1]) end
"""

# KEYS: lines (hash line -> value), ids (hash custom_id -> line), counts (hash), the
# batch's record. ARGV: line, custom_id, counter ('completed' | 'failed'), value. Returns
# 1 when recorded, 0 (nothing written) when the line or the custom_id is recorded already,
# or the batch has ended.
RECORD_LINE = (
    _ENDED
    + """
if ended(KEYS[4]) then return 0 end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
return 1
"""
)

# KEYS: lines. ARGV: start, stop. Returns the recorded lines among [start, stop).
RECORDED_LINES = """
local out = {}
for line = tonumber(ARGV[1]), tonumber(ARGV[2]) - 1 do
  if redis.call('HEXISTS', KEYS[1], line) == 1 then table.insert(out, line) end
end
return out
"""

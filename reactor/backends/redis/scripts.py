"""The Lua scripts of the Redis State: each State operation that reads, decides and writes is one script,
so it is one atomic step on the server whatever the number of workers calling it.

Time is the server's: every script reads `TIME` (seconds and microseconds) itself and answers in
durations (waits, retry_in_s), never instants, so workers on machines whose clocks differ share
one bucket and one breaker exactly (reactor/ports.py, "the Provider's gate").

The scripts port the pure machines line by line: TAKE is reactor.token_bucket.TokenBucket,
LEASE is reactor.gate_state.LeasedBucket.lease, BREAKER is reactor.gate_state.SharedBreaker over
reactor.circuit_breaker.CircuitBreaker. Lua numbers are doubles, as Python's floats; a
number crosses back as a string (%.17g: exact), since Redis would truncate a Lua number to an
integer. The "nudge up" of a wait (an answer exact enough to wait on) steps by one ulp of the
magnitude, as the machines do with math.ulp.
"""

from __future__ import annotations

# Shared helpers, prepended to the scripts that need them.
_COMMON = r"""
local function server_now(given)
  if given ~= nil and given ~= '' then return tonumber(given) end  -- a test's told clock (RedisState's `clock`)
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function num(x)
  if x ~= x then return 'nan' end
  if x == math.huge then return 'inf' end
  if x == -math.huge then return '-inf' end
  return string.format('%.17g', x)
end
local function ulp(x)
  local step = math.abs(x) * 2.220446049250313e-16
  if step == 0 then step = 4.9406564584124654e-324 end
  return step
end
"""

# KEYS[1] the bucket's hash (t: tokens, u: updated, c: capacity, r: rate)
# ARGV n, capacity, refill_per_s, now ("": the server's TIME). Returns the wait as a string: "0" when taken.
TAKE = _COMMON + r"""
local key = KEYS[1]
local n, capacity, rate = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = server_now(ARGV[4])
local h = redis.call('HMGET', key, 't', 'u', 'c', 'r')
local tokens, updated
if h[1] and tonumber(h[3]) == capacity and tonumber(h[4]) == rate then
  tokens, updated = tonumber(h[1]), tonumber(h[2])
else
  tokens, updated = capacity, now  -- a new bucket (or a changed one) starts full
end
local function level(at)
  if at > updated then return math.min(capacity, tokens + (at - updated) * rate) end
  return tokens
end
if now > updated then tokens = level(now); updated = now end
local wait
if n <= tokens then
  tokens = math.max(0, tokens - n)
  wait = 0
elseif n > capacity then
  wait = math.huge
else
  wait = math.max(0, updated + (n - tokens) / rate - now)
  local step = ulp(math.abs(now) + wait)
  while level(now + wait) < n do wait = wait + step; step = step * 2 end
end
redis.call('HSET', key, 't', num(tokens), 'u', num(updated), 'c', num(capacity), 'r', num(rate))
-- once full again it is the same as no bucket: let it go then (on the server's clock: not when told the time)
if ARGV[4] == '' then redis.call('PEXPIRE', key, math.ceil(((capacity - tokens) / rate) * 1000) + 1000) end
return num(wait)
"""

# KEYS[1] the bucket's hash (c, r, u, f, n: next lease number, i: incarnation; "t<id>": a lease's tokens)
# KEYS[2] the leases by expiry (a sorted set of lease ids), KEYS[3] the incarnation counter (never expires)
# ARGV want, capacity, refill_per_s, lease_s, give_back id ("" for none), unused, reserve, now ("": TIME)
# Returns {lease_id, granted, wait_s, free}.
LEASE = _COMMON + r"""
local hkey, lkey, ikey = KEYS[1], KEYS[2], KEYS[3]
local want, capacity, rate, lease_s = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local give_id, give_unused, reserve = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local now = server_now(ARGV[8])
local h = redis.call('HMGET', hkey, 'c', 'r', 'u', 'f', 'n', 'i')
local cap, rt, updated, free, next_id, inc
local leases = {}  -- {id, tokens, expires}, by expiry then id
local removed, added = {}, nil
if not h[1] then
  cap, rt, updated, free, next_id = capacity, rate, now, capacity, 1
  inc = redis.call('INCR', ikey)
  redis.call('DEL', lkey)
else
  cap, rt, updated, free = tonumber(h[1]), tonumber(h[2]), tonumber(h[3]), tonumber(h[4])
  next_id, inc = tonumber(h[5]), h[6]
  local z = redis.call('ZRANGE', lkey, 0, -1, 'WITHSCORES')
  for i = 1, #z, 2 do
    leases[#leases + 1] = {z[i], 0, tonumber(z[i + 1])}
  end
  if #leases > 0 then
    local fields = {}
    for i, lease in ipairs(leases) do fields[i] = 't' .. lease[1] end
    local toks = redis.call('HMGET', hkey, unpack(fields))
    for i, lease in ipairs(leases) do lease[2] = tonumber(toks[i]) or 0 end
  end
end

local function leased_sum()
  local s = 0
  for _, lease in ipairs(leases) do s = s + lease[2] end
  return s
end
local function refilled(f, elapsed, leased)
  return math.min(cap - leased, f + elapsed * rt)
end
-- (free, at, number of leading leases expired) if left alone until `until`
local function project(until_t)
  local f, at, leased = free, updated, leased_sum()
  local expired = 0
  for _, lease in ipairs(leases) do
    if lease[3] > until_t then break end
    if lease[3] > at then
      f = refilled(f, lease[3] - at, leased)
      at = lease[3]
    end
    leased = leased - lease[2]
    expired = expired + 1
  end
  if until_t > at then
    f = refilled(f, until_t - at, leased)
    at = until_t
  end
  return f, at, expired
end
local function drop(index)
  removed[#removed + 1] = leases[index][1]
  table.remove(leases, index)
end
local function advance(t)
  t = math.max(t, updated)
  local f, _, expired = project(t)
  for _ = 1, expired do drop(1) end
  free, updated = f, t
  return t
end
local function free_at(t)
  local f = project(math.max(t, updated))
  return f
end
local function time_until(n, t)
  if n <= 0 then return 0 end
  if n > cap then return math.huge end
  local start = math.max(t, updated)
  if free_at(start) >= n then return start - t end
  local f, at, leased = free_at(start), start, leased_sum()
  for _, lease in ipairs(leases) do
    local skip = false
    if lease[3] <= at then
      leased = leased - lease[2]
      skip = true
    end
    if not skip then
      local stop = false
      if cap - leased >= n then
        local reach = at + (n - f) / rt
        if reach <= lease[3] then stop = true end
      end
      if stop then break end
      f = refilled(f, lease[3] - at, leased)
      at = lease[3]
      leased = leased - lease[2]
    end
  end
  local wait = math.max(0, at + math.max(0, n - f) / rt - t)
  local step = ulp(math.abs(t) + wait)
  while free_at(t + wait) < n do wait = wait + step; step = step * 2 end
  return wait
end

-- a changed capacity or rate applies from now on; the leases out are kept
if cap ~= capacity or rt ~= rate then
  advance(now)
  cap, rt = capacity, rate
  free = math.min(free, cap - leased_sum())
end
now = advance(now)
if give_id ~= '' then
  for i, lease in ipairs(leases) do
    if lease[1] == give_id then
      local back = math.min(math.max(give_unused, 0), lease[2])
      drop(i)
      free = math.min(cap - leased_sum(), free + back)
      break
    end
  end
end

local lease_id, granted, wait = '', 0, 0
if reserve > 0 then
  granted = math.min(want, math.floor(free) - reserve)
  if granted <= 0 then
    granted = 0
    if want > 0 then wait = time_until(reserve + 1, now) end
  end
else
  granted = math.min(want, math.floor(free))
  if granted <= 0 and want > 0 then
    granted = math.min(want, math.floor(cap))
    if granted > 0 then wait = time_until(granted, now) else wait = math.huge end
  end
  if granted < 0 then granted = 0 end
end
if granted > 0 then
  lease_id = inc .. '.' .. next_id
  next_id = next_id + 1
  free = free - granted
  added = {lease_id, granted, now + wait + lease_s}
  leases[#leases + 1] = added
end

-- write back
local fields = {'c', num(cap), 'r', num(rt), 'u', num(updated), 'f', num(free), 'n', next_id, 'i', inc}
if added then
  fields[#fields + 1] = 't' .. added[1]
  fields[#fields + 1] = added[2]
  redis.call('ZADD', lkey, num(added[3]), added[1])
end
redis.call('HSET', hkey, unpack(fields))
if #removed > 0 then
  local tfields = {}
  for i, id in ipairs(removed) do tfields[i] = 't' .. id end
  redis.call('HDEL', hkey, unpack(tfields))
  redis.call('ZREM', lkey, unpack(removed))
end
-- when every lease has expired and the refill has filled it, the bucket is as good as a new one: let it go then
local last = now
for _, lease in ipairs(leases) do if lease[3] > last then last = lease[3] end end
local idle_ms = math.ceil((last - now + (cap - free) / rt) * 1000) + 1000
if ARGV[8] == '' then  -- an expiry counts on the server's clock: not when the script was told the time
  redis.call('PEXPIRE', hkey, idle_ms)
  if #leases > 0 then redis.call('PEXPIRE', lkey, idle_ms) end
end
return {lease_id, tostring(granted), num(wait), num(free)}
"""

# KEYS[1] the breaker's hash (the fields of reactor.circuit_breaker.BreakerSnapshot, the probe's owner and expiry)
# ARGV op ("admit" | "report" | "read"), now ("": TIME), failure_threshold, open_timeout_s, success_threshold,
#      owner, probe_lease_s (admit) | event (report), probe ("1" | "0")
# Returns {state, failures, successes, retry_in_s, probe_owner ("" for none), opened, admitted, rejected,
#          probes, stale, allowed, probe, transitions (comma separated)}.
BREAKER = _COMMON + r"""
local key = KEYS[1]
local op = ARGV[1]
local failure_threshold, open_timeout, success_threshold = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local owner = ARGV[6]
local now = server_now(ARGV[2])
local h = redis.call('HMGET', key, 'state', 'failures', 'successes', 'pif', 'open_until', 'opened', 'admitted',
                     'rejected', 'probes', 'stale', 'probe_owner', 'probe_expires')
local m = {
  state = h[1] or 'closed', failures = tonumber(h[2]) or 0, successes = tonumber(h[3]) or 0, pif = h[4] == '1',
  open_until = tonumber(h[5]) or 0, opened = tonumber(h[6]) or 0, admitted = tonumber(h[7]) or 0,
  rejected = tonumber(h[8]) or 0, probes = tonumber(h[9]) or 0, stale = tonumber(h[10]) or 0,
}
local probe_owner = h[11]
if probe_owner == '' then probe_owner = false end
local probe_expires = tonumber(h[12]) or 0
m.pif = m.pif and m.state == 'half_open'
local transitions = {}

local function move(to)
  transitions[#transitions + 1] = m.state .. '->' .. to
  m.state = to
  m.failures, m.successes, m.pif = 0, 0, false
end
local function open(t)
  move('open')
  m.open_until = t + open_timeout
  m.opened = m.opened + 1
end
local function release_probe()
  if m.state == 'half_open' then m.pif = false end
end
local function allow(t)
  if m.state == 'open' then
    if t < m.open_until then
      m.rejected = m.rejected + 1
      return false
    end
    move('half_open')
  end
  if m.state == 'half_open' then
    if m.pif then
      m.rejected = m.rejected + 1
      return false
    end
    m.pif = true
    m.probes = m.probes + 1
  end
  m.admitted = m.admitted + 1
  return true
end
local function record_success(t)
  if m.state == 'closed' then
    m.failures = 0
  elseif m.state == 'half_open' and m.pif then
    m.pif = false
    m.successes = m.successes + 1
    if m.successes >= success_threshold then move('closed') end
  else
    m.stale = m.stale + 1
  end
end
local function record_failure(t)
  if m.state == 'closed' then
    m.failures = m.failures + 1
    if m.failures >= failure_threshold then open(t) end
  elseif m.state == 'half_open' and m.pif then
    open(t)
  else
    m.stale = m.stale + 1
  end
end

-- restore: a probe whose lease ran out is released (a prober that died frees the slot)
if probe_owner and probe_expires <= now then
  release_probe()
  probe_owner = false
end

local allowed, probe = false, false
if op == 'admit' then
  local probe_lease_s = tonumber(ARGV[7])
  allowed = allow(now)
  probe = allowed and m.state == 'half_open'
  if probe then
    probe_owner, probe_expires = owner, now + probe_lease_s
  end
elseif op == 'report' then
  local event, claims_probe = ARGV[7], ARGV[8] == '1'
  local holder = claims_probe and probe_owner == owner and m.pif
  if m.state == 'half_open' and not holder then
    if event ~= 'release' then m.stale = m.stale + 1 end
  elseif event == 'success' then
    record_success(now)
  elseif event == 'failure' then
    record_failure(now)
  else
    release_probe()
  end
end

if not m.pif then probe_owner = false end
local state = m.state
if state == 'open' and now >= m.open_until then state = 'half_open' end
local retry = 0
if state == 'open' then
  retry = m.open_until - now
  local step = ulp(math.abs(now) + retry)
  while now + retry < m.open_until do retry = retry + step; step = step * 2 end
end
redis.call('HSET', key, 'state', m.state, 'failures', m.failures, 'successes', m.successes, 'pif', m.pif and '1' or '0',
           'open_until', num(m.open_until), 'opened', m.opened, 'admitted', m.admitted, 'rejected', m.rejected,
           'probes', m.probes, 'stale', m.stale, 'probe_owner', probe_owner or '', 'probe_expires', num(probe_expires))
return {state, tostring(m.failures), tostring(m.successes), num(retry), probe_owner or '', tostring(m.opened),
        tostring(m.admitted), tostring(m.rejected), tostring(m.probes), tostring(m.stale),
        allowed and '1' or '0', probe and '1' or '0', table.concat(transitions, ',')}
"""

# KEYS[1] the list; ARGV item, max_items, ttl_ms
APPEND_RECENT = r"""
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

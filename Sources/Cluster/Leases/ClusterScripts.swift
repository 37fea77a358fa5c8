/// The cluster's state transitions, as Lua scripts Redis runs atomically. Every change to a
/// job's state goes through one of these, so two hosts can never both win a transition
/// (queued → running happens once; a result is recorded once; an interrupted job stays so).
///
/// Keys are built from the prefix passed as ARGV[1] (see ``ClusterKeys``), because which
/// keys a route touches depends on what the script reads. That is fine for a single Redis
/// or a replicated one; Redis Cluster (sharded) would need hash tags and is not supported.
enum ClusterScripts {
    /// Helpers shared by the scripts: choosing an owner (and raising the project's ownership
    /// epoch when it changes hands, ``RedisProjectRegistry``) and ending a job. A project whose
    /// lease lapsed goes back to the live host that still lists it (it has the project
    /// materialized: a slow renewal must not move it); otherwise to the live host with the
    /// fewest leases. A settled entry is acknowledged and deleted, so a host's stream only
    /// holds work that is not done.
    static let prelude = """
        local function pick(prefix)
          local best, fewest = false, -1
          for _, host in ipairs(redis.call('SMEMBERS', prefix .. ':workers')) do
            if redis.call('EXISTS', prefix .. ':worker:' .. host) == 1 then
              local n = redis.call('SCARD', prefix .. ':leases:' .. host)
              if fewest < 0 or n < fewest or (n == fewest and host < best) then best, fewest = host, n end
            end
          end
          return best
        end
        local function sticky(prefix, project)
          for _, host in ipairs(redis.call('SMEMBERS', prefix .. ':workers')) do
            if redis.call('SISMEMBER', prefix .. ':leases:' .. host, project) == 1
              and redis.call('EXISTS', prefix .. ':worker:' .. host) == 1 then return host end
          end
          return false
        end
        local function claim(prefix, project, host)
          local key = prefix .. ':project:' .. project
          if redis.call('HGET', key, 'last') ~= host then
            redis.call('HSET', key, 'last', host)
            redis.call('HINCRBY', key, 'epoch', 1)
          end
        end
        local function route(prefix, project, ttl)
          local key = prefix .. ':owner:' .. project
          local owner = redis.call('GET', key)
          if owner then return owner end
          owner = sticky(prefix, project) or pick(prefix)
          if owner then
            redis.call('SET', key, owner, 'PX', ttl)
            redis.call('SADD', prefix .. ':leases:' .. owner, project)
            claim(prefix, project, owner)
          end
          return owner
        end
        local function settle(stream, entry)
          redis.call('XACK', stream, 'workers', entry)
          redis.call('XDEL', stream, entry)
        end
        local function append(job, offset, text, cap)
          local total = tonumber(redis.call('HGET', job, 'outlen') or '0')
          if text == '' or offset < total then return end
          if redis.call('STRLEN', job .. ':out') < cap then redis.call('APPEND', job .. ':out', text) end
          total = offset + string.len(text)
          redis.call('HSET', job, 'outlen', total)
          redis.call('XADD', job .. ':events', 'MAXLEN', '~', '256', '*', 't', 'output', 'end', total)
        end
        local function finish(prefix, id, state, now, result, err, retention)
          local job = prefix .. ':job:' .. id
          redis.call('HSET', job, 'state', state, 'finished', now)
          if result ~= '' then redis.call('HSET', job, 'result', result) end
          if err ~= '' then redis.call('HSET', job, 'error', err) end
          redis.call('XADD', job .. ':events', 'MAXLEN', '~', '256', '*', 't', 'final', 's', state)
          for _, key in ipairs({job, job .. ':events', job .. ':out'}) do redis.call('PEXPIRE', key, retention) end
        end

        """

    /// ARGV: prefix, id, project, request JSON, lane, now, lease ms, retention ms, idempotency key or '',
    /// the submitter's active-jobs set or '', the submitter's cap.
    /// Records the job, routes it to its project's owner (leasing the project to the live
    /// worker with the fewest leases if it has none) and queues it on that worker's stream,
    /// all at once: there is never a record without a queue entry or the reverse.
    /// The active set is pruned of ended jobs as it is counted, so it needs no bookkeeping
    /// on any of the paths by which a job ends; it costs at most the cap in reads.
    static let submit = RedisScript(
        prelude + """
            local prefix, id, project = ARGV[1], ARGV[2], ARGV[3]
            local job = prefix .. ':job:' .. id
            if redis.call('EXISTS', job) == 1 then return {'existing', id} end
            local idem = ARGV[9]
            if idem ~= '' then
              local prior = redis.call('GET', idem)
              if prior then return {'existing', prior} end
            end
            local active = ARGV[10]
            if active ~= '' then
              local live = 0
              for _, other in ipairs(redis.call('ZRANGE', active, 0, -1)) do
                local state = redis.call('HGET', prefix .. ':job:' .. other, 'state')
                if state == 'queued' or state == 'running' then live = live + 1
                else redis.call('ZREM', active, other) end
              end
              if live >= tonumber(ARGV[11]) then return {'busy', tostring(live)} end
            end
            local owner = route(prefix, project, ARGV[7])
            if not owner then return {'nohost'} end
            if active ~= '' then
              redis.call('ZADD', active, ARGV[6], id)
              redis.call('PEXPIRE', active, ARGV[8])
            end
            if idem ~= '' then redis.call('SET', idem, id, 'PX', ARGV[8]) end
            redis.call('HSET', job, 'id', id, 'project', project, 'request', ARGV[4], 'lane', ARGV[5],
              'state', 'queued', 'host', owner, 'created', ARGV[6], 'outlen', '0')
            local recent = prefix .. ':project:' .. project .. ':jobs'
            redis.call('ZADD', recent, ARGV[6], id)
            redis.call('ZREMRANGEBYRANK', recent, 0, -1001)
            redis.call('PEXPIRE', recent, ARGV[8])
            redis.call('XADD', prefix .. ':jobs:' .. owner, '*', 'type', 'job', 'id', id, 'request', ARGV[4])
            return {'queued', id, owner}
            """)

    /// ARGV: prefix, project, lease ms. The project's owner, leasing it to a live worker
    /// first if nobody holds it; false if no worker is alive. For calls that are not jobs
    /// (file reads and writes), which go to the owner too.
    static let route = RedisScript(
        prelude + """
            return route(ARGV[1], ARGV[2], ARGV[3])
            """)

    /// ARGV: prefix, me, incarnation, id, entry, now, retention ms.
    /// What a worker should do with a job entry from its own stream: run it, skip it (it
    /// ended or was moved elsewhere), or nothing because it runs here already. A job left
    /// running by an earlier life of this host is marked interrupted, never re-run.
    static let adopt = RedisScript(
        prelude + """
            local prefix, me, inc, id, entry = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
            local job = prefix .. ':job:' .. id
            local stream = prefix .. ':jobs:' .. me
            local f = redis.call('HMGET', job, 'state', 'host', 'inc', 'request')
            if (f[1] ~= 'queued' and f[1] ~= 'running') or f[2] ~= me then
              settle(stream, entry)
              return {'skip'}
            end
            if f[1] == 'running' then
              if f[3] == inc then return {'mine'} end
              finish(prefix, id, 'interrupted', ARGV[6], '',
                'the worker host ' .. me .. ' restarted while this job was running; it was not re-run', ARGV[7])
              settle(stream, entry)
              return {'interrupted'}
            end
            return {'run', f[4]}
            """)

    /// ARGV: prefix, id, me, incarnation, now, retention ms. 1 if this host may start the
    /// job now. The only way into `running`: the job must still be queued and routed here.
    /// A retry whose first reply was lost finds its own incarnation and wins again; a job
    /// an earlier life of this host left running is marked interrupted, never re-run.
    static let start = RedisScript(
        prelude + """
            local job = ARGV[1] .. ':job:' .. ARGV[2]
            local f = redis.call('HMGET', job, 'state', 'host', 'inc')
            if f[1] == 'queued' and f[2] == ARGV[3] then
              redis.call('HSET', job, 'state', 'running', 'inc', ARGV[4], 'started', ARGV[5])
              redis.call('XADD', job .. ':events', 'MAXLEN', '~', '256', '*', 't', 'state', 's', 'running')
              return 1
            end
            if f[1] == 'running' and f[2] == ARGV[3] then
              if f[3] == ARGV[4] then return 1 end
              finish(ARGV[1], ARGV[2], 'interrupted', ARGV[5], '',
                'the worker host ' .. ARGV[3] .. ' restarted while this job was running; it was not re-run', ARGV[6])
            end
            return 0
            """)

    /// ARGV: prefix, id, incarnation, offset, text, cap. Appends output once: a retry of
    /// an append that already landed (same offset) changes nothing.
    static let output = RedisScript(
        prelude + """
            local job = ARGV[1] .. ':job:' .. ARGV[2]
            local f = redis.call('HMGET', job, 'state', 'inc')
            if f[1] ~= 'running' or f[2] ~= ARGV[3] then return 0 end
            append(job, tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6]))
            return 1
            """)

    /// ARGV: prefix, id, incarnation, state, now, result JSON, error, retention ms, me, entry,
    /// output offset, last output, output cap, error code (or ''). Records the last output and the result (only
    /// if this incarnation runs the job) and acknowledges the stream entry in the same step,
    /// so an entry is never acknowledged without its result.
    static let finish = RedisScript(
        prelude + """
            local job = ARGV[1] .. ':job:' .. ARGV[2]
            local f = redis.call('HMGET', job, 'state', 'inc')
            local recorded = 0
            if f[1] == 'running' and f[2] == ARGV[3] then
              append(job, tonumber(ARGV[11]), ARGV[12], tonumber(ARGV[13]))
              if ARGV[14] and ARGV[14] ~= '' then redis.call('HSET', job, 'error_code', ARGV[14]) end
              finish(ARGV[1], ARGV[2], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
              recorded = 1
            end
            if ARGV[10] ~= '' then settle(ARGV[1] .. ':jobs:' .. ARGV[9], ARGV[10]) end
            return recorded
            """)

    /// ARGV: prefix, id, now, retention ms, signal. A queued job ends here; a running one gets a
    /// cancel entry on its host's stream.
    static let cancel = RedisScript(
        prelude + """
            local job = ARGV[1] .. ':job:' .. ARGV[2]
            local f = redis.call('HMGET', job, 'state', 'host')
            if not f[1] then return 'missing' end
            if f[1] == 'queued' then
              finish(ARGV[1], ARGV[2], 'cancelled', ARGV[3], '', 'cancelled before it started', ARGV[4])
              return 'cancelled'
            end
            if f[1] == 'running' then
              redis.call('HSET', job, 'cancel', '1')
              redis.call('XADD', ARGV[1] .. ':jobs:' .. f[2], '*', 'type', 'cancel', 'id', ARGV[2], 'signal', ARGV[5])
              return 'signalled'
            end
            return f[1]
            """)
}

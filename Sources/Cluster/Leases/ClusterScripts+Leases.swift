extension ClusterScripts {
    /// ARGV: prefix, me, lease ms, heartbeat text. Renews the heartbeat and every lease this
    /// host still holds; forgets projects another host took; takes back a lapsed lease
    /// nobody else claimed (this host still has the project materialized). Returns the
    /// projects held.
    static let renew = RedisScript(
        prelude + """
            local prefix, me, ttl = ARGV[1], ARGV[2], ARGV[3]
            redis.call('SET', prefix .. ':worker:' .. me, ARGV[4], 'PX', ttl)
            redis.call('SADD', prefix .. ':workers', me)
            local set = prefix .. ':leases:' .. me
            local kept = {}
            for _, project in ipairs(redis.call('SMEMBERS', set)) do
              local key = prefix .. ':owner:' .. project
              local owner = redis.call('GET', key)
              if owner == me then
                redis.call('PEXPIRE', key, ttl)
                kept[#kept + 1] = project
              elseif not owner then
                redis.call('SET', key, me, 'PX', ttl)
                kept[#kept + 1] = project
                claim(prefix, project, me)
              else
                redis.call('SREM', set, project)
              end
            end
            return kept
            """)

    /// ARGV: prefix, me, project, lease ms. 1 if the project is now (or already was) leased here.
    static let acquire = RedisScript(
        prelude + """
            local key = ARGV[1] .. ':owner:' .. ARGV[3]
            if redis.call('SET', key, ARGV[2], 'NX', 'PX', ARGV[4]) or redis.call('GET', key) == ARGV[2] then
              redis.call('PEXPIRE', key, ARGV[4])
              redis.call('SADD', ARGV[1] .. ':leases:' .. ARGV[2], ARGV[3])
              claim(ARGV[1], ARGV[3], ARGV[2])
              return 1
            end
            return 0
            """)

    /// ARGV: prefix, me, project. Compare-and-delete: a lease another host holds by now is
    /// left alone.
    static let release = RedisScript(
        """
        local key = ARGV[1] .. ':owner:' .. ARGV[3]
        redis.call('SREM', ARGV[1] .. ':leases:' .. ARGV[2], ARGV[3])
        if redis.call('GET', key) == ARGV[2] then
          redis.call('DEL', key)
          return 1
        end
        return 0
        """)

    /// ARGV: prefix, project, tombstone ms. Forgets a deleted project: its registration,
    /// its lease (whoever holds it) and its place in the holder's lease set. The epoch goes
    /// up and stays, alone, until the tombstone expires (`RedisProjectRegistry.remove`).
    static let forget = RedisScript(
        """
        local prefix, project = ARGV[1], ARGV[2]
        local key = prefix .. ':project:' .. project
        local owner = redis.call('GET', prefix .. ':owner:' .. project)
        if owner then redis.call('SREM', prefix .. ':leases:' .. owner, project) end
        redis.call('DEL', prefix .. ':owner:' .. project)
        redis.call('SREM', prefix .. ':projects', project)
        redis.call('HDEL', key, 'spec', 'last')
        redis.call('HINCRBY', key, 'epoch', 1)
        redis.call('PEXPIRE', key, ARGV[3])
        return 1
        """)

    /// ARGV: prefix, dead, lease ms. Hands the dead host's lapsed leases to live hosts;
    /// returns how many are still unexpired (-1 if the host is alive after all).
    static let takeover = RedisScript(
        prelude + """
            local prefix, dead = ARGV[1], ARGV[2]
            if redis.call('EXISTS', prefix .. ':worker:' .. dead) == 1 then return -1 end
            local set = prefix .. ':leases:' .. dead
            local left = 0
            for _, project in ipairs(redis.call('SMEMBERS', set)) do
              local owner = redis.call('GET', prefix .. ':owner:' .. project)
              if owner == dead then
                left = left + 1
              else
                redis.call('SREM', set, project)
                if not owner then route(prefix, project, ARGV[3]) end
              end
            end
            return left
            """)

    /// ARGV: prefix, dead, entry, entry type, job id, now, lease ms, retention ms.
    /// Settles one entry of a dead (or departed) host's stream: a job that was running
    /// there is interrupted, never re-run; a job still queued moves to its project's new
    /// owner once the old lease has lapsed ('wait' until then).
    static let rescue = RedisScript(
        prelude + """
            local prefix, dead, entry = ARGV[1], ARGV[2], ARGV[3]
            if redis.call('EXISTS', prefix .. ':worker:' .. dead) == 1 then return 'alive' end
            local stream = prefix .. ':jobs:' .. dead
            if ARGV[4] ~= 'job' then
              settle(stream, entry)
              return 'acked'
            end
            local id = ARGV[5]
            local job = prefix .. ':job:' .. id
            local f = redis.call('HMGET', job, 'state', 'host', 'project', 'request')
            if (f[1] ~= 'queued' and f[1] ~= 'running') or f[2] ~= dead then
              settle(stream, entry)
              return 'done'
            end
            if f[1] == 'running' then
              finish(prefix, id, 'interrupted', ARGV[6], '',
                'the worker host ' .. dead .. ' stopped while this job was running; it was not re-run', ARGV[8])
              settle(stream, entry)
              return 'interrupted'
            end
            if redis.call('GET', prefix .. ':owner:' .. f[3]) == dead then return 'wait' end
            local owner = route(prefix, f[3], ARGV[7])
            if not owner then return 'wait' end
            redis.call('HSET', job, 'host', owner)
            redis.call('XADD', prefix .. ':jobs:' .. owner, '*', 'type', 'job', 'id', id, 'request', f[4])
            settle(stream, entry)
            return 'moved'
            """)

    /// ARGV: prefix, dead. Forgets a dead host once nothing of it is left: no lease, no
    /// pending or undelivered entry. 1 if it was forgotten.
    static let cleanup = RedisScript(
        """
        local prefix, dead = ARGV[1], ARGV[2]
        if redis.call('EXISTS', prefix .. ':worker:' .. dead) == 1 then return 0 end
        if redis.call('SCARD', prefix .. ':leases:' .. dead) > 0 then return 0 end
        local stream = prefix .. ':jobs:' .. dead
        if redis.call('EXISTS', stream) == 1 then
          local ok, pending = pcall(redis.call, 'XPENDING', stream, 'workers')
          if not ok or pending[1] > 0 then return 0 end
          local last = ''
          local info = redis.call('XINFO', 'STREAM', stream)
          for i = 1, #info, 2 do if info[i] == 'last-generated-id' then last = info[i + 1] end end
          for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
            local name, delivered = '', ''
            for i = 1, #g, 2 do
              if g[i] == 'name' then name = g[i + 1] end
              if g[i] == 'last-delivered-id' then delivered = g[i + 1] end
            end
            if name == 'workers' and delivered ~= last then return 0 end
          end
          redis.call('DEL', stream)
        end
        redis.call('DEL', prefix .. ':leases:' .. dead)
        redis.call('SREM', prefix .. ':workers', dead)
        return 1
        """)
}

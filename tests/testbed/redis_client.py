"""A Sentinel-aware Redis client for haswarm's tests, using redis-py's Sentinel
(installed from PyPI by build-images.sh). The password comes on standard input,
never on the command line or in the environment.

  redis_client.py SENTINELS GROUP write-read N   write N keys (WAIT 1 each batch), read them back
  redis_client.py SENTINELS GROUP check N        read the N keys and fail if any is missing
  redis_client.py SENTINELS GROUP stream SECONDS write every 50 ms; print "ok T" / "fail T" lines (T: unix time)
  redis_client.py SENTINELS GROUP probe SECONDS  write every 50 ms for SECONDS (0: until killed), one attempt per
                                                write (redis-py's own retries off), each to a key of its own
                                                (probe:N), then WAIT 1 (100 ms) on the same connection; print
                                                "ok START END ACKED N" (ACKED: 1 when a replica acknowledged it)
                                                / "fail START END ERROR" lines (unix times of the SET attempt)
"""
import sys
import time

from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel


def main():
    sentinels = [(h, 26379) for h in sys.argv[1].split(",")]
    group, mode, arg = sys.argv[2], sys.argv[3], int(sys.argv[4])
    pw = sys.stdin.readline().strip()
    s = Sentinel(sentinels, socket_timeout=1.0, password=pw, sentinel_kwargs={"password": pw})
    master = s.master_for(group, socket_timeout=1.0, password=pw, retry_on_timeout=False)
    if mode == "write-read":
        for i in range(arg):
            master.set(f"py{i}", f"v{i}")
        acked = master.execute_command("WAIT", 1, 5000)
        missing = [i for i in range(arg) if master.get(f"py{i}") != f"v{i}".encode()]
        print(f"acked-by {acked} missing {len(missing)} master {s.discover_master(group)[0]}")
        sys.exit(1 if missing or acked < 1 else 0)
    if mode == "check":
        missing = [i for i in range(arg) if master.get(f"py{i}") != f"v{i}".encode()]
        print(f"missing {len(missing)} master {s.discover_master(group)[0]}")
        sys.exit(1 if missing else 0)
    if mode == "stream":
        end = time.time() + arg
        n = 0
        while time.time() < end:
            try:
                master.set("stream", n)
                print(f"ok {time.time():.3f}", flush=True)
            except Exception as e:  # noqa: BLE001 - any failure is a failed write
                print(f"fail {time.time():.3f} {type(e).__name__}", flush=True)
            n += 1
            time.sleep(0.05)
        return
    if mode == "probe":
        # One attempt per write, here and towards the sentinels: a failed
        # attempt is reported at once instead of being retried with backoff
        # inside redis-py, so the first "ok" after a failover is as early as
        # the group allows (to within the 50 ms period).
        once = Retry(NoBackoff(), 0)
        probe = Sentinel(
            sentinels,
            socket_timeout=1.0,
            password=pw,
            sentinel_kwargs={"password": pw, "socket_timeout": 1.0, "retry": once},
        )
        target = probe.master_for(group, socket_timeout=1.0, password=pw, retry=once)
        end = time.time() + arg if arg > 0 else float("inf")
        n = 0
        while time.time() < end:
            start = time.time()
            # One connection for both commands: WAIT counts the replicas
            # that acknowledged this connection's writes.
            conn = None
            try:
                pool = target.connection_pool
                conn = pool.get_connection()
                conn.send_command("SET", f"probe:{n}", n)
                conn.read_response()
                done = time.time()
                try:
                    conn.send_command("WAIT", 1, 100)
                    acked = 1 if int(conn.read_response()) >= 1 else 0
                except Exception:  # noqa: BLE001 - an unanswered WAIT acknowledges nothing
                    acked = 0
                    conn.disconnect()
                print(f"ok {start:.3f} {done:.3f} {acked} {n}", flush=True)
            except Exception as e:  # noqa: BLE001 - any failure is a failed write
                if conn is not None:
                    conn.disconnect()
                print(f"fail {start:.3f} {time.time():.3f} {type(e).__name__}", flush=True)
            finally:
                if conn is not None:
                    pool.release(conn)
            n += 1
            time.sleep(max(0.0, 0.05 - (time.time() - start)))
        return
    sys.exit(f"unknown mode {mode}")


main()

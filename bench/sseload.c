/*
 * sseload: a single-threaded epoll SSE load client for the tickstream benchmarks.
 *
 * Opens CLIENTS HTTP/1.1 connections to http://HOST:PORT/PATH, reads the event streams
 * (chunked or not), and after a warm-up measures for SECONDS:
 *   - events delivered (one per "data:" line), bytes, "disconnect"/"reset" events;
 *   - delivery latency of every event: receive time (CLOCK_REALTIME, taken once per read)
 *     minus the event's "ingestTime" (RFC 3339, UTC, as in the proto3 JSON mapping), into a
 *     histogram of 10 us buckets;
 *   - with --check-ids, gaps and repeats in the numeric tail of "id:" lines (one-symbol streams
 *     of tickstream, whose offsets are consecutive); with --check-seq, the same of the data's
 *     "sequence" (Nchan, whose ids are its own: one publisher numbering one channel's events);
 *   - its own CPU time, so a run can say when the load client itself was the bottleneck.
 * Prints one JSON object on stdout. When every connection has its response headers it prints
 * "ready N" on stderr, so a caller can sample the server's memory while the streams are open.
 *
 * Build: gcc -O2 -o sseload sseload.c
 * Usage: sseload HOST PORT PATH CLIENTS SECONDS [--warmup S] [--check-ids | --check-seq]
 *        [--source-ips N] [--connect-timeout S]   (default 20: measure anyway once it passes)
 *        [--start-at NS]   (measure from this CLOCK_REALTIME ns at the earliest, e.g. a fixed
 *                           point of a replay; the warm-up still runs first)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 8192
#define BUCKET_US 10
#define BUCKETS 1000000 /* 10 s of 10 us buckets; later latencies go to the last one */
#define READ_BYTES (256 * 1024)
#define CONNECTS_IN_FLIGHT 256
#define BUSY_READY_SOCKETS 200
#define PAUSE_NS 500000

enum { ST_CONNECTING, ST_HEADERS, ST_BODY, ST_CLOSED };
enum { CH_SIZE, CH_DATA, CH_CRLF };

typedef struct {
    int fd;
    int state;
    int chunked;
    int chunk_state;
    long chunk_left;
    char line[LINE_MAX_BYTES];
    int line_len;
    int line_overflow;
    char head[8192];
    int head_len;
    uint64_t events;     /* in the measurement window */
    uint64_t last_id;
} conn_t;

static conn_t *conns;
static int nconns, started, connected_ok, in_flight;
static uint32_t *histogram;
static uint64_t events, bytes_in, disconnects, resets, gaps, repeats, closed_early, errors;
static int measuring, check_ids, check_seq;
static int64_t now_read_ns;
static char cached_prefix[20];
static int64_t cached_secs;
static struct sockaddr_in target;
static int source_ips = 1;
static int64_t start_at_ns; /* CLOCK_REALTIME; 0 = ready + warm-up */
static const char *req_host, *req_path;

static int64_t now_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* "2026-11-30T02:11:44.885691460Z" -> ns since the epoch; -1 if malformed. */
static int64_t parse_rfc3339(const char *s, const char *end) {
    if (end - s < 20) return -1;
    if (memcmp(s, cached_prefix, 19) != 0) {
        struct tm tm = {0};
        if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                   &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
            return -1;
        tm.tm_year -= 1900;
        tm.tm_mon -= 1;
        cached_secs = (int64_t)timegm(&tm);
        memcpy(cached_prefix, s, 19);
    }
    int64_t frac = 0;
    int digits = 0;
    const char *p = s + 19;
    if (p < end && *p == '.') {
        for (p++; p < end && *p >= '0' && *p <= '9'; p++) {
            if (digits < 9) {
                frac = frac * 10 + (*p - '0');
                digits++;
            }
        }
    }
    while (digits < 9) {
        frac *= 10;
        digits++;
    }
    return cached_secs * 1000000000LL + frac;
}

/* A gap or a repeat when ``id`` does not follow the connection's previous one. */
static void check_next(conn_t *c, uint64_t id) {
    if (measuring && c->last_id) {
        if (id > c->last_id + 1) gaps += id - c->last_id - 1;
        if (id <= c->last_id) repeats++;
    }
    c->last_id = id;
}

/* The number in "sequence":"N" of a data line; 0 when it has none. */
static uint64_t data_sequence(const char *line, int len) {
    static const char key[] = "\"sequence\":\"";
    const char *at = memmem(line, len, key, sizeof key - 1);
    uint64_t value = 0;
    if (!at) return 0;
    for (const char *p = at + sizeof key - 1; p < line + len && *p >= '0' && *p <= '9'; p++)
        value = value * 10 + (uint64_t)(*p - '0');
    return value;
}

static void on_line(conn_t *c, const char *line, int len) {
    if (len >= 5 && memcmp(line, "data:", 5) == 0) {
        if (check_seq) {
            uint64_t sequence = data_sequence(line, len);
            if (sequence) check_next(c, sequence);
        }
        if (!measuring) return;
        events++;
        c->events++;
        static const char key[] = "\"ingestTime\":\"";
        const char *at = memmem(line, len, key, sizeof key - 1);
        if (at) {
            const char *stamp = at + sizeof key - 1;
            const char *quote = memchr(stamp, '"', line + len - stamp);
            if (quote) {
                int64_t ingest = parse_rfc3339(stamp, quote);
                if (ingest > 0) {
                    int64_t us = (now_read_ns - ingest) / 1000;
                    int64_t bucket = us < 0 ? 0 : us / BUCKET_US;
                    histogram[bucket >= BUCKETS ? BUCKETS - 1 : bucket]++;
                }
            }
        }
    } else if (len >= 6 && memcmp(line, "event:", 6) == 0) {
        if (!measuring) return;
        const char *name = line + 6;
        int n = len - 6;
        while (n > 0 && *name == ' ') name++, n--;
        if (n == 10 && memcmp(name, "disconnect", 10) == 0) disconnects++;
        if (n == 5 && memcmp(name, "reset", 5) == 0) resets++;
    } else if (check_ids && len >= 3 && memcmp(line, "id:", 3) == 0) {
        const char *p = line + len;
        while (p > line && p[-1] >= '0' && p[-1] <= '9') p--;
        uint64_t id = 0;
        for (; p < line + len; p++) id = id * 10 + (uint64_t)(*p - '0');
        check_next(c, id);
    }
}

/* Feed stream bytes (after de-chunking) to the SSE line splitter (CR, LF or CRLF endings:
 * WHATWG "Server-sent events", parsing an event stream; a CR-LF pair yields one empty line). */
static void on_stream_bytes(conn_t *c, const char *p, long n) {
    for (long i = 0; i < n; i++) {
        char ch = p[i];
        if (ch == '\n' || ch == '\r') {
            if (!c->line_overflow) on_line(c, c->line, c->line_len);
            c->line_len = 0;
            c->line_overflow = 0;
            continue;
        }
        if (c->line_len < LINE_MAX_BYTES) {
            c->line[c->line_len++] = ch;
        } else {
            c->line_overflow = 1;
        }
    }
}

static void on_body_bytes(conn_t *c, const char *p, long n) {
    if (!c->chunked) {
        on_stream_bytes(c, p, n);
        return;
    }
    long i = 0;
    while (i < n) {
        if (c->chunk_state == CH_SIZE) {
            char ch = p[i++];
            if (ch == '\n') {
                c->chunk_state = c->chunk_left ? CH_DATA : CH_CRLF;
            } else if (ch >= '0' && ch <= '9') {
                c->chunk_left = c->chunk_left * 16 + (ch - '0');
            } else if ((ch | 32) >= 'a' && (ch | 32) <= 'f') {
                c->chunk_left = c->chunk_left * 16 + ((ch | 32) - 'a' + 10);
            }
        } else if (c->chunk_state == CH_DATA) {
            long take = n - i < c->chunk_left ? n - i : c->chunk_left;
            on_stream_bytes(c, p + i, take);
            i += take;
            c->chunk_left -= take;
            if (!c->chunk_left) c->chunk_state = CH_CRLF;
        } else { /* CH_CRLF: skip to the end of the line after the chunk data */
            if (p[i++] == '\n') {
                c->chunk_state = CH_SIZE;
                c->chunk_left = 0;
            }
        }
    }
}

static void close_conn(int ep, conn_t *c, int early) {
    if (c->state == ST_CLOSED) return;
    if (c->state == ST_CONNECTING) in_flight--;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = ST_CLOSED;
    if (early) closed_early++;
}

static void start_connect(int ep, int i) {
    conn_t *c = &conns[i];
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) {
        perror("socket");
        exit(1);
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (source_ips > 1) {
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000002 + (i % source_ips));
#ifdef IP_BIND_ADDRESS_NO_PORT
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
#endif
        bind(c->fd, (struct sockaddr *)&src, sizeof src);
    }
    c->state = ST_CONNECTING;
    in_flight++;
    int rc = connect(c->fd, (struct sockaddr *)&target, sizeof target);
    if (rc < 0 && errno != EINPROGRESS) {
        errors++;
        close_conn(ep, c, 0);
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void on_writable(int ep, conn_t *c, int i) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    in_flight--;
    if (err) {
        errors++;
        c->state = ST_CLOSED;
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        return;
    }
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n"
                     "Cache-Control: no-cache\r\n\r\n",
                     req_path, req_host);
    if (write(c->fd, req, n) != n) {
        errors++;
        close_conn(ep, c, 0);
        return;
    }
    c->state = ST_HEADERS;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void on_readable(int ep, conn_t *c, char *buf) {
    for (;;) {
        ssize_t n = read(c->fd, buf, READ_BYTES);
        if (n == 0) {
            close_conn(ep, c, 1);
            return;
        }
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) close_conn(ep, c, 1);
            return;
        }
        now_read_ns = now_ns(CLOCK_REALTIME);
        if (measuring) bytes_in += n;
        char *p = buf;
        long left = n;
        if (c->state == ST_HEADERS) {
            long room = (long)sizeof c->head - 1 - c->head_len;
            long take = left < room ? left : room;
            memcpy(c->head + c->head_len, p, take);
            c->head_len += take;
            c->head[c->head_len] = 0;
            char *end = strstr(c->head, "\r\n\r\n");
            if (!end) {
                if (c->head_len >= (int)sizeof c->head - 1) close_conn(ep, c, 1);
                return;
            }
            long header_bytes = end + 4 - c->head;
            if (strncmp(c->head + 9, "200", 3) != 0) {
                errors++;
                close_conn(ep, c, 0);
                return;
            }
            c->chunked = strcasestr(c->head, "transfer-encoding: chunked") != NULL;
            c->state = ST_BODY;
            connected_ok++;
            long consumed_now = header_bytes - (c->head_len - take);
            p += consumed_now;
            left -= consumed_now;
        }
        if (left > 0) on_body_bytes(c, p, left);
        if (n < READ_BYTES) return;
    }
}

/* When the window opens: ``warmup`` after ``ready`` (monotonic), or at --start-at if later. */
static int64_t window_start(int64_t ready, double warmup) {
    int64_t start = ready + (int64_t)(warmup * 1e9);
    if (start_at_ns) {
        int64_t at = ready + (start_at_ns - now_ns(CLOCK_REALTIME));
        if (at > start) start = at;
    }
    return start;
}

static int arg_index(int argc, char **argv, const char *name) {
    for (int i = 6; i < argc; i++)
        if (strcmp(argv[i], name) == 0) return i;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr,
                "usage: %s HOST PORT PATH CLIENTS SECONDS [--warmup S] [--check-ids | --check-seq] "
                "[--source-ips N] [--connect-timeout S]\n",
                argv[0]);
        return 2;
    }
    req_host = argv[1];
    int port = atoi(argv[2]);
    req_path = argv[3];
    nconns = atoi(argv[4]);
    double seconds = atof(argv[5]);
    double warmup = 2.0;
    int k;
    if ((k = arg_index(argc, argv, "--warmup")) && k + 1 < argc) warmup = atof(argv[k + 1]);
    if ((k = arg_index(argc, argv, "--source-ips")) && k + 1 < argc) source_ips = atoi(argv[k + 1]);
    check_ids = arg_index(argc, argv, "--check-ids") != 0;
    check_seq = arg_index(argc, argv, "--check-seq") != 0;
    double connect_timeout = 20.0;
    if ((k = arg_index(argc, argv, "--connect-timeout")) && k + 1 < argc)
        connect_timeout = atof(argv[k + 1]);
    if ((k = arg_index(argc, argv, "--start-at")) && k + 1 < argc)
        start_at_ns = strtoll(argv[k + 1], NULL, 10);

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < (rlim_t)nconns + 64) {
        rl.rlim_cur = (rlim_t)nconns + 64 < rl.rlim_max ? (rlim_t)nconns + 64 : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < (rlim_t)nconns + 16) {
        fprintf(stderr, "open-files limit %ld is too low for %d connections\n",
                (long)rl.rlim_cur, nconns);
        return 2;
    }

    target.sin_family = AF_INET;
    target.sin_port = htons(port);
    if (inet_pton(AF_INET, req_host, &target.sin_addr) != 1) {
        fprintf(stderr, "HOST must be an IPv4 address\n");
        return 2;
    }
    conns = calloc(nconns, sizeof *conns);
    histogram = calloc(BUCKETS, sizeof *histogram);
    char *buf = malloc(READ_BYTES);
    int ep = epoll_create1(0);
    struct epoll_event *evs = calloc(4096, sizeof *evs);

    int64_t t0 = now_ns(CLOCK_MONOTONIC);
    int64_t ready_at = 0, measure_start = 0, measure_end = 0, window_start_unix_ns = 0;
    double cpu_start = 0;
    int64_t deadline_connect = t0 + (int64_t)(connect_timeout * 1e9);
    for (;;) {
        while (started < nconns && in_flight < CONNECTS_IN_FLIGHT) start_connect(ep, started++);
        int n = epoll_wait(ep, evs, 4096, 50);
        /* Under heavy load, let data pile up a little so one read takes many events: a read
         * per event would make this client, not the server, the bottleneck. At light load
         * (few ready sockets) nothing waits, so latency is not inflated. */
        if (n > BUSY_READY_SOCKETS) {
            struct timespec pause = {0, PAUSE_NS};
            nanosleep(&pause, NULL);
        }
        for (int e = 0; e < n; e++) {
            int i = (int)evs[e].data.u32;
            conn_t *c = &conns[i];
            if (c->state == ST_CONNECTING) {
                on_writable(ep, c, i);
            } else if (c->state == ST_HEADERS || c->state == ST_BODY) {
                on_readable(ep, c, buf);
            }
        }
        int64_t now = now_ns(CLOCK_MONOTONIC);
        if (!ready_at && started == nconns && in_flight == 0) {
            int pending = 0;
            for (int i = 0; i < nconns; i++) pending += conns[i].state == ST_HEADERS;
            if (!pending) {
                ready_at = now;
                measure_start = window_start(now, warmup);
                fprintf(stderr, "ready %d\n", connected_ok);
                fflush(stderr);
            }
        }
        if (!ready_at && now > deadline_connect) {
            ready_at = now;
            measure_start = window_start(now, warmup);
            fprintf(stderr, "ready %d (connect deadline passed)\n", connected_ok);
            fflush(stderr);
        }
        if (ready_at && !measuring && !measure_end && now >= measure_start) {
            measuring = 1;
            cpu_start = cpu_seconds();
            measure_start = now;
            window_start_unix_ns = now_ns(CLOCK_REALTIME);
        }
        if (measuring && now >= measure_start + (int64_t)(seconds * 1e9)) {
            measuring = 0;
            measure_end = now;
            break;
        }
    }
    double cpu = cpu_seconds() - cpu_start;
    double wall = (measure_end - measure_start) / 1e9;
    uint64_t total = 0, silent = 0, waiting = 0;
    for (int i = 0; i < BUCKETS; i++) total += histogram[i];
    for (int i = 0; i < nconns; i++) waiting += conns[i].state == ST_HEADERS || conns[i].state == ST_CONNECTING;
    for (int i = 0; i < nconns; i++) silent += conns[i].events == 0;
    double pct[4] = {0.50, 0.90, 0.99, 1.0};
    double value_ms[4] = {0, 0, 0, 0};
    for (int q = 0; q < 4; q++) {
        uint64_t want = (uint64_t)(pct[q] * (double)total), seen = 0;
        if (want == 0) want = 1;
        for (int i = 0; i < BUCKETS; i++) {
            seen += histogram[i];
            if (seen >= want) {
                value_ms[q] = (i + 1) * BUCKET_US / 1000.0;
                break;
            }
        }
        if (!total) value_ms[q] = -1;
    }
    printf("{\"clients\": %d, \"connected\": %d, \"seconds\": %.2f, \"events\": %llu, "
           "\"events_per_s\": %.0f, \"mbytes_per_s\": %.1f, \"latency_samples\": %llu, "
           "\"p50_ms\": %.2f, \"p90_ms\": %.2f, \"p99_ms\": %.2f, \"max_ms\": %.2f, "
           "\"clients_with_no_events\": %llu, \"never_answered\": %llu, \"closed_early\": %llu, \"errors\": %llu, "
           "\"disconnect_events\": %llu, \"reset_events\": %llu, \"id_gaps\": %llu, "
           "\"id_repeats\": %llu, \"load_client_cpu\": %.2f, \"load_client_saturated\": %s, "
           "\"window_start_unix_ns\": %lld}\n",
           nconns, connected_ok, wall, (unsigned long long)events, events / wall,
           bytes_in / wall / 1e6, (unsigned long long)total, value_ms[0], value_ms[1],
           value_ms[2], value_ms[3], (unsigned long long)silent, (unsigned long long)waiting,
           (unsigned long long)closed_early, (unsigned long long)errors,
           (unsigned long long)disconnects, (unsigned long long)resets,
           (unsigned long long)gaps, (unsigned long long)repeats, cpu / wall,
           cpu / wall > 0.9 ? "true" : "false", (long long)window_start_unix_ns);
    return 0;
}

// Command bench-streams is the many-long-streams benchmark (issue 12,
// point 5; `make bench-streams`, deploy/bench/streams.sh): thousands of
// concurrent SSE chat-completion streams, a chunk a second each, through
// a front door (the gateway, nginx) and straight to the upstream, with
// what each stream costs the front door's process.
//
// Two roles, two processes (each end holds one descriptor per stream,
// and a process may have only so many):
//
//	bench-streams upstream --addr 127.0.0.1:18101 --duration 60s
//	bench-streams run --streams 10000 --duration 60s \
//	    --target gateway=http://127.0.0.1:18004@PID --target nginx=http://127.0.0.1:18003@PID \
//	    --target direct=http://127.0.0.1:18101 --host model-chat.bench.localhost --key ig_…
//
// The upstream answers every POST with an SSE stream: a chunk (an
// OpenAI-style chat.completion.chunk carrying its send time, "t", in Unix
// nanoseconds) at once and then every --interval, for --duration, then
// "data: [DONE]". The client opens --streams streams to each target in
// turn, spread over --ramp, and while all are open measures, from
// /proc/<pid>: the resident set's growth per open stream (VmRSS now
// minus before the streams opened, over the streams) and the CPU time
// (utime+stime) per chunk the client received; and for every chunk the
// latency from the upstream's send to the client's read (the two
// processes share the machine's clock). "added" latency is a target's
// percentile minus the direct one's. With --metrics-path the target's
// Prometheus page is read too (Go heap in use and goroutines, per
// stream). After the streams end it waits --settle and reports the
// resident set again.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: bench-streams upstream|run [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "upstream":
		err = upstream(os.Args[2:])
	case "run":
		err = run(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-streams:", err)
		os.Exit(1)
	}
}

// upstream serves SSE streams.
func upstream(args []string) error {
	fs := flag.NewFlagSet("upstream", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:18101", "listen address")
	duration := fs.Duration("duration", 60*time.Second, "how long each stream lasts")
	interval := fs.Duration("interval", time.Second, "time between chunks")
	_ = fs.Parse(args)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		end := time.Now().Add(*duration)
		t := time.NewTimer(0)
		defer t.Stop()
		buf := make([]byte, 0, 512)
		for i := 0; ; i++ {
			select {
			case <-r.Context().Done():
				return
			case <-t.C:
			}
			if !time.Now().Before(end) {
				_, _ = w.Write([]byte("data: [DONE]\n\n"))
				return
			}
			buf = appendChunk(buf[:0], i, time.Now())
			if _, err := w.Write(buf); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
			t.Reset(*interval)
		}
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintln(os.Stderr, "bench-streams: upstream listening on", ln.Addr())
	return srv.Serve(ln)
}

// appendChunk is a chat.completion.chunk of the size a model server sends
// for a token or two (~220 bytes), stamped with its send time.
func appendChunk(b []byte, i int, now time.Time) []byte {
	b = append(b, `data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":`...)
	b = strconv.AppendInt(b, now.Unix(), 10)
	b = append(b, `,"model":"bench-model","choices":[{"index":0,"delta":{"content":" token`...)
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, `"},"finish_reason":null}],"t":`...)
	b = strconv.AppendInt(b, now.UnixNano(), 10)
	return append(b, "}\n\n"...)
}

type target struct {
	name, url string
	pid       int
}

type targetsFlag []target

func (t *targetsFlag) String() string { return fmt.Sprint(*t) }

func (t *targetsFlag) Set(v string) error {
	name, rest, ok := strings.Cut(v, "=")
	if !ok {
		return errors.New("want name=url[@pid]")
	}
	tg := target{name: name, url: rest}
	if u, p, ok := strings.Cut(rest, "@"); ok {
		pid, err := strconv.Atoi(p)
		if err != nil {
			return fmt.Errorf("pid: %w", err)
		}
		tg.url, tg.pid = u, pid
	}
	*t = append(*t, tg)
	return nil
}

type config struct {
	streams         int
	duration, ramp  time.Duration
	settle          time.Duration
	host, key, path string
	metricsPath     string
	dialTimeout     time.Duration
}

func run(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	var targets targetsFlag
	var cfg config
	rounds := fs.Int("rounds", 1, "rounds over the targets, in the order given")
	fs.Var(&targets, "target", "name=url[@pid] (repeat); pid: the process whose memory and CPU to measure")
	fs.IntVar(&cfg.streams, "streams", 10000, "concurrent streams per target")
	fs.DurationVar(&cfg.duration, "duration", 60*time.Second, "each stream's length (as the upstream's --duration)")
	fs.DurationVar(&cfg.ramp, "ramp", 10*time.Second, "time over which the streams are opened")
	fs.DurationVar(&cfg.settle, "settle", 5*time.Second, "wait after the streams ended before the last memory reading")
	fs.StringVar(&cfg.host, "host", "model-chat.bench.localhost", "Host header")
	fs.StringVar(&cfg.key, "key", "", "X-API-Key")
	fs.StringVar(&cfg.path, "path", "/v1/chat/completions", "request path")
	fs.StringVar(&cfg.metricsPath, "metrics-path", "", "for targets named gateway*: the Prometheus page to read Go heap and goroutines from")
	_ = fs.Parse(args)
	cfg.dialTimeout = 10 * time.Second
	if cfg.duration <= cfg.ramp+6*time.Second {
		return fmt.Errorf("--duration %s must exceed --ramp %s by more than 6s", cfg.duration, cfg.ramp)
	}
	if len(targets) == 0 {
		return errors.New("no --target")
	}
	var results []result
	// The resident set a stream adds is measured from the process's
	// first reading, before any stream: a process keeps memory it has
	// used (nginx its connection structures, Go its heap for a while),
	// so a later round's own starting point would hide it.
	fresh := map[string]sample{}
	for r := 1; r <= *rounds; r++ {
		for _, t := range targets {
			res, err := measure(cfg, t)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			if f, ok := fresh[t.name]; ok {
				res.fresh = f
			} else {
				fresh[t.name], res.fresh = res.before, res.before
			}
			res.round = r
			fmt.Fprintf(os.Stderr, "bench-streams: round %d %s: %s\n", r, t.name, res.line())
			results = append(results, res)
		}
	}
	report(cfg, results)
	return nil
}

type sample struct {
	at        time.Time
	rssKiB    int64
	cpuTicks  int64
	heapInuse float64
	gor       float64
}

type result struct {
	round    int
	name     string
	streams  int
	failed   int64
	chunks   int64
	window   time.Duration
	before   sample
	fresh    sample // the process before its first round
	t0, t1   sample
	after    sample
	hasPID   bool
	lat      []int32 // µs, chunks read in the window
	p50, p99 float64 // ms
	p999     float64
	loadavg  string
}

func (r result) rssPerStream() float64 {
	return float64(r.t1.rssKiB-r.fresh.rssKiB) / float64(r.streams)
}

func (r result) cpuPerChunk() float64 { // µs
	if r.chunks == 0 {
		return 0
	}
	return float64(r.t1.cpuTicks-r.t0.cpuTicks) * 1e6 / clockTicks / float64(r.chunks)
}

func (r result) line() string {
	s := fmt.Sprintf("%d streams (%d failed), %d chunks in %.1fs, latency p50 %.2f ms p99 %.2f ms p99.9 %.2f ms",
		r.streams, r.failed, r.chunks, r.window.Seconds(), r.p50, r.p99, r.p999)
	if r.hasPID {
		s += fmt.Sprintf(", RSS %d → %d KiB (%.1f KiB/stream), after %d KiB, CPU %.1f µs/chunk",
			r.fresh.rssKiB, r.t1.rssKiB, r.rssPerStream(), r.after.rssKiB, r.cpuPerChunk())
	}
	if r.t1.heapInuse > 0 {
		s += fmt.Sprintf(", heap in use %.0f → %.0f MiB (%.1f KiB/stream), after %.0f MiB, goroutines %.0f → %.0f",
			r.fresh.heapInuse/(1<<20), r.t1.heapInuse/(1<<20), (r.t1.heapInuse-r.fresh.heapInuse)/1024/float64(r.streams),
			r.after.heapInuse/(1<<20), r.before.gor, r.t1.gor)
	}
	return s + ", load " + r.loadavg
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat
// (100 on every Linux this runs on).
const clockTicks = 100

func measure(cfg config, t target) (result, error) {
	res := result{name: t.name, streams: cfg.streams, hasPID: t.pid > 0}
	read := func() sample {
		s := sample{at: time.Now()}
		if t.pid > 0 {
			s.rssKiB, s.cpuTicks = procSample(t.pid)
		}
		if cfg.metricsPath != "" && strings.HasPrefix(t.name, "gateway") {
			s.heapInuse, s.gor = metricsSample(t.url + cfg.metricsPath)
		}
		return s
	}
	res.before = read()

	var (
		inWindow atomic.Bool
		chunks   atomic.Int64
		failed   atomic.Int64
		opened   atomic.Int64
		mu       sync.Mutex
		lats     [][]int32
		wg       sync.WaitGroup
		firstErr atomic.Pointer[error]
	)
	ctx, cancel := context.WithTimeout(context.Background(), cfg.duration+cfg.ramp+2*time.Minute)
	defer cancel()
	start := time.Now()
	for i := range cfg.streams {
		at := start.Add(time.Duration(int64(cfg.ramp) * int64(i) / int64(cfg.streams)))
		time.Sleep(time.Until(at))
		wg.Go(func() {
			var mine []int32
			err := stream(ctx, cfg, t.url, &opened, func(sent int64, now time.Time) {
				if inWindow.Load() {
					chunks.Add(1)
					mine = append(mine, int32(min(now.UnixNano()-sent, 1<<31-1)/1000))
				}
			})
			if err != nil {
				if failed.Add(1) == 1 {
					firstErr.Store(&err)
				}
			}
			mu.Lock()
			lats = append(lats, mine)
			mu.Unlock()
		})
	}
	// All streams are open (or failed): a moment for the last ones'
	// first chunks, then the window, which ends before the first stream
	// does.
	for opened.Load()+failed.Load() < int64(cfg.streams) && ctx.Err() == nil && time.Since(start) < cfg.ramp+30*time.Second {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	windowEnd := start.Add(cfg.duration - 2*time.Second)
	if time.Until(windowEnd) < 2*time.Second {
		return res, fmt.Errorf("the streams took too long to open (%s): no window left", time.Since(start).Round(time.Millisecond))
	}
	res.t0 = read()
	inWindow.Store(true)
	time.Sleep(time.Until(windowEnd))
	inWindow.Store(false)
	res.t1 = read()
	res.window = res.t1.at.Sub(res.t0.at)
	res.chunks = chunks.Load()
	res.loadavg = loadavg()
	wg.Wait()
	time.Sleep(cfg.settle)
	res.after = read()
	res.failed = failed.Load()
	if p := firstErr.Load(); p != nil {
		fmt.Fprintf(os.Stderr, "bench-streams: %s: %d streams failed, the first: %v\n", t.name, res.failed, *p)
	}
	var all []int32
	for _, l := range lats {
		all = append(all, l...)
	}
	slices.Sort(all)
	res.lat = all
	res.p50, res.p99, res.p999 = pct(all, 0.50), pct(all, 0.99), pct(all, 0.999)
	return res, nil
}

func pct(sorted []int32, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return float64(sorted[min(int(q*float64(len(sorted))), len(sorted)-1)]) / 1000
}

var dataT = []byte(`,"t":`)

// stream runs one streaming request to its end, calling chunk for each
// chunk with its send time.
func stream(ctx context.Context, cfg config, base string, opened *atomic.Int64, chunk func(sent int64, now time.Time)) error {
	addr := strings.TrimPrefix(base, "http://")
	d := net.Dialer{Timeout: cfg.dialTimeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })
	defer stop()
	body := `{"model":"bench-model","stream":true,"messages":[{"role":"user","content":"Say hello, slowly."}]}`
	req := "POST " + cfg.path + " HTTP/1.1\r\nHost: " + cfg.host + "\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\n"
	if cfg.key != "" {
		req += "X-API-Key: " + cfg.key + "\r\n"
	}
	req += "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	if _, err := io.WriteString(nc, req); err != nil {
		return err
	}
	br := bufio.NewReaderSize(nc, 2048)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %q", resp.Status, b)
	}
	opened.Add(1)
	lines := bufio.NewReaderSize(resp.Body, 1024)
	for {
		line, err := lines.ReadSlice('\n')
		if err != nil {
			if err == io.EOF {
				err = errors.New("stream ended before [DONE]")
			}
			return err
		}
		now := time.Now()
		if bytes.HasPrefix(line, []byte("data: [DONE]")) {
			return nil
		}
		if i := bytes.LastIndex(line, dataT); i >= 0 {
			v := line[i+len(dataT):]
			if j := bytes.IndexByte(v, '}'); j > 0 {
				if sent, err := strconv.ParseInt(string(v[:j]), 10, 64); err == nil {
					chunk(sent, now)
				}
			}
		}
	}
}

// procSample reads VmRSS (KiB) and utime+stime (clock ticks) of pid.
func procSample(pid int) (rssKiB, ticks int64) {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				rssKiB, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			}
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// Fields after the command (which may hold spaces) in ")".
		if i := bytes.LastIndexByte(b, ')'); i > 0 {
			f := strings.Fields(string(b[i+1:]))
			// f[0] is field 3 (state); utime and stime are fields 14, 15.
			if len(f) > 13 {
				u, _ := strconv.ParseInt(f[11], 10, 64)
				s, _ := strconv.ParseInt(f[12], 10, 64)
				ticks = u + s
			}
		}
	}
	return rssKiB, ticks
}

// metricsSample reads go_memstats_heap_inuse_bytes and go_goroutines.
func metricsSample(url string) (heapInuse, goroutines float64) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		switch name {
		case "go_memstats_heap_inuse_bytes":
			heapInuse, _ = strconv.ParseFloat(v, 64)
		case "go_goroutines":
			goroutines, _ = strconv.ParseFloat(v, 64)
		}
	}
	return heapInuse, goroutines
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// report prints a Markdown table: the medians over the rounds per
// target, "added" latency against direct, and ratios against nginx.
func report(cfg config, results []result) {
	type agg struct {
		rss, cpu, p50, p99, heap, gor, after []float64
		failed                               int64
		hasPID                               bool
		loads                                []string
	}
	var order []string
	by := map[string]*agg{}
	for _, r := range results {
		a := by[r.name]
		if a == nil {
			a = &agg{}
			by[r.name] = a
			order = append(order, r.name)
		}
		a.p50 = append(a.p50, r.p50)
		a.p99 = append(a.p99, r.p99)
		a.failed += r.failed
		a.loads = append(a.loads, r.loadavg)
		if r.hasPID {
			a.hasPID = true
			a.rss = append(a.rss, r.rssPerStream())
			a.cpu = append(a.cpu, r.cpuPerChunk())
			a.after = append(a.after, float64(r.after.rssKiB)/1024)
		}
		if r.t1.heapInuse > 0 {
			a.heap = append(a.heap, (r.t1.heapInuse-r.fresh.heapInuse)/1024/float64(r.streams))
			a.gor = append(a.gor, (r.t1.gor-r.before.gor)/float64(r.streams))
		}
	}
	direct := by["direct"]
	nginx := by["nginx"]
	fmt.Printf("\n%d streams per target, a chunk a second, %s each (ramp %s); medians over the rounds\n\n", cfg.streams, cfg.duration, cfg.ramp)
	fmt.Println("| target | RSS / stream | × nginx | CPU / chunk | × nginx | chunk latency p50 | p99 | p99 added | heap / stream | goroutines / stream | RSS after | failed | load average |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, name := range order {
		a := by[name]
		row := []string{name}
		ratio := func(v []float64, ref func(*agg) []float64) string {
			if nginx == nil || len(ref(nginx)) == 0 || median(ref(nginx)) == 0 {
				return "—"
			}
			return fmt.Sprintf("%.2f", median(v)/median(ref(nginx)))
		}
		if a.hasPID {
			row = append(row, fmt.Sprintf("%.1f KiB", median(a.rss)), ratio(a.rss, func(x *agg) []float64 { return x.rss }),
				fmt.Sprintf("%.1f µs", median(a.cpu)), ratio(a.cpu, func(x *agg) []float64 { return x.cpu }))
		} else {
			row = append(row, "—", "—", "—", "—")
		}
		row = append(row, fmt.Sprintf("%.2f ms", median(a.p50)), fmt.Sprintf("%.2f ms", median(a.p99)))
		if direct != nil && name != "direct" {
			row = append(row, fmt.Sprintf("%+.2f ms", median(a.p99)-median(direct.p99)))
		} else {
			row = append(row, "—")
		}
		if len(a.heap) > 0 {
			row = append(row, fmt.Sprintf("%.1f KiB", median(a.heap)), fmt.Sprintf("%.2f", median(a.gor)))
		} else {
			row = append(row, "—", "—")
		}
		if a.hasPID {
			row = append(row, fmt.Sprintf("%.0f MiB", median(a.after)))
		} else {
			row = append(row, "—")
		}
		row = append(row, strconv.FormatInt(a.failed, 10), strings.Join(a.loads, "; "))
		fmt.Println("| " + strings.Join(row, " | ") + " |")
	}
}

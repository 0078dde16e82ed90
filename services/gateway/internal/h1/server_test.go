package h1

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/infergate/infergate/services/internal/httpserver"
)

// fixture is a front end on a loopback port with a real net/http
// fallback (h2c on, as the gateway's) in front of a real upstream.
type fixture struct {
	t        *testing.T
	addr     string
	upstream *httptest.Server
	// fast counts the requests the fast path's handler took.
	fast atomic.Int64
	// step releases the next SSE event; canceled reports an upstream
	// request whose client went away.
	step, canceled, started chan struct{}
	cancel                  context.CancelFunc
	served                  chan error
	// raw is an upstream the test answers byte by byte (/raw...).
	raw net.Listener
	s   *Server
}

// testHandler proxies every request to the fixture's upstream, except
// /handoff (declined) and /answer (answered).
type testHandler struct{ f *fixture }

func (h testHandler) ServeH1(c *Conn, req *Request) bool {
	switch req.Path {
	case "/handoff":
		return false
	case "/answer":
		h.f.fast.Add(1)
		_ = c.Answer(http.StatusTeapot, "Content-Type: text/plain\r\n", []byte("teapot"))
		return true
	}
	h.f.fast.Add(1)
	for i := range req.Header {
		if strings.EqualFold(req.Header[i].Name, "X-Api-Key") {
			req.Header[i].Drop = true
		}
	}
	up, _ := url.Parse(h.f.upstream.URL + "/base?fixed=1")
	if strings.HasPrefix(req.Path, "/raw") {
		up, _ = url.Parse("http://" + h.f.raw.Addr().String())
	}
	if strings.HasPrefix(req.Path, "/down") {
		up, _ = url.Parse("http://127.0.0.1:1")
	}
	res := c.Forward(req, up)
	if res.Err != nil && !res.Answered && !res.ClientGone {
		_ = c.Answer(http.StatusBadGateway, "Content-Type: text/plain\r\n", []byte("bad gateway"))
	}
	return true
}

func newFixture(t *testing.T) *fixture { return newFixtureGrace(t, 5*time.Second) }

func newFixtureGrace(t *testing.T, grace time.Duration) *fixture {
	t.Helper()
	f := &fixture{t: t, step: make(chan struct{}), canceled: make(chan struct{}, 8), started: make(chan struct{}, 8)}
	f.upstream = httptest.NewServer(http.HandlerFunc(f.upstreamHandler))
	t.Cleanup(f.upstream.Close)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.raw = raw
	t.Cleanup(func() { raw.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	fallback := httpserver.New(f.addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Front", "net/http")
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "fallback %s %s %d", r.Proto, r.URL.Path, len(body))
	}))
	s := &Server{Fallback: fallback}
	f.s = s
	s.SetHandler(testHandler{f}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel, f.served = cancel, make(chan error, 1)
	go func() { f.served <- s.Serve(ctx, ln, grace) }()
	t.Cleanup(func() {
		cancel()
		if err := <-f.served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return f
}

// seen is what the upstream's /echo saw.
type seen struct {
	Method, Path, Query, Host string
	Header                    http.Header
	Body                      string
}

func (f *fixture) upstreamHandler(w http.ResponseWriter, r *http.Request) {
	switch strings.TrimPrefix(r.URL.Path, "/base") {
	case "/sse":
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			if i < 2 {
				select {
				case <-f.step:
				case <-r.Context().Done():
					f.canceled <- struct{}{}
					return
				}
			}
		}
	case "/hang":
		f.started <- struct{}{}
		<-r.Context().Done()
		f.canceled <- struct{}{}
	case "/nocontent":
		w.WriteHeader(http.StatusNoContent)
	case "/until-close":
		// HTTP/1.0-style: no length, no chunking, the end is the close.
		conn, brw, _ := w.(http.Hijacker).Hijack()
		_, _ = brw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
		_ = brw.Flush()
		_ = conn.Close()
	case "/hop":
		w.Header().Set("Connection", "X-Hop")
		w.Header().Set("X-Hop", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-Kept", "1")
		_, _ = io.WriteString(w, "hop")
	default:
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Host, r.Header, string(body)})
	}
}

// dial opens a raw client connection.
func (f *fixture) dial() (net.Conn, *bufio.Reader) {
	f.t.Helper()
	c, err := net.Dial("tcp", f.addr)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func TestForward(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c, br := f.dial()
	write(t, c, "POST /v1/chat?stream=0 HTTP/1.1\r\nHost: model-a.p.localhost:8000\r\nX-API-Key: secret\r\n"+
		"X-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nKeep-Alive: 5\r\nUser-Agent: t\r\nContent-Length: 5\r\n\r\nhello")
	resp, body := read(t, br, "POST")
	var s seen
	if err := json.Unmarshal([]byte(body), &s); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%d %s %v", resp.StatusCode, body, err)
	}
	upHost := strings.TrimPrefix(f.upstream.URL, "http://")
	if s.Method != "POST" || s.Path != "/base/v1/chat" || s.Query != "fixed=1&stream=0" || s.Host != upHost || s.Body != "hello" {
		t.Errorf("upstream saw %+v", s)
	}
	for name, want := range map[string]string{
		"X-Api-Key": "", "Keep-Alive": "", "Forwarded": "", "User-Agent": "t",
		"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Host": "model-a.p.localhost:8000", "X-Forwarded-Proto": "http",
	} {
		if got := strings.Join(s.Header.Values(name), ","); got != want {
			t.Errorf("upstream %s: %q, want %q", name, got, want)
		}
	}
	if resp.Header.Get("Date") == "" || resp.ContentLength != int64(len(body)) {
		t.Errorf("response head: %v", resp.Header)
	}

	t.Run("hop-by-hop response headers are removed", func(t *testing.T) {
		write(t, c, "GET /hop HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, body := read(t, br, "GET")
		if body != "hop" || resp.Header.Get("X-Hop") != "" || resp.Header.Get("Keep-Alive") != "" || resp.Header.Get("X-Kept") != "1" {
			t.Errorf("%q %v", body, resp.Header)
		}
	})
	t.Run("HEAD and 204 have no body", func(t *testing.T) {
		write(t, c, "HEAD /echo HTTP/1.1\r\nHost: a\r\n\r\nGET /nocontent HTTP/1.1\r\nHost: a\r\n\r\nGET /answer HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp, body := read(t, br, "HEAD"); resp.StatusCode != 200 || body != "" {
			t.Errorf("HEAD: %d %q", resp.StatusCode, body)
		}
		if resp, body := read(t, br, "GET"); resp.StatusCode != 204 || body != "" {
			t.Errorf("204: %d %q", resp.StatusCode, body)
		}
		if resp, body := read(t, br, "GET"); resp.StatusCode != 418 || body != "teapot" {
			t.Errorf("after them: %d %q", resp.StatusCode, body)
		}
	})
	t.Run("a response ended by the upstream's close is re-framed", func(t *testing.T) {
		write(t, c, "GET /until-close HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, body := read(t, br, "GET")
		if body != "all of it" || resp.TransferEncoding == nil {
			t.Errorf("%q %v", body, resp.TransferEncoding)
		}
	})
	if n := f.fast.Load(); n != 6 {
		t.Errorf("the fast path took %d requests, want 6", n)
	}
}

// TestPipelined: requests sent back to back on one connection, bodies
// included, are answered in order; Connection: close closes after its
// response.
func TestPipelined(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c, br := f.dial()
	write(t, c, "POST /one HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"+
		"POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\ndefg"+
		"GET /three HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	for _, want := range []struct{ path, body string }{{"/base/one", "abc"}, {"/base/two", "defg"}, {"/base/three", ""}} {
		_, body := read(t, br, "GET")
		var s seen
		if err := json.Unmarshal([]byte(body), &s); err != nil || s.Path != want.path || s.Body != want.body {
			t.Errorf("%s: %+v %v", want.path, s, err)
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after Connection: close: %v, want EOF", err)
	}
}

// TestBodyInPieces: a body that arrives in parts is read whole and sent
// on.
func TestBodyInPieces(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c, br := f.dial()
	write(t, c, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello")
	write(t, c, " world")
	_, body := read(t, br, "POST")
	var s seen
	if err := json.Unmarshal([]byte(body), &s); err != nil || s.Body != "hello world" {
		t.Errorf("%+v %v", s, err)
	}
}

// TestHandedToNetHTTP: what the fast path does not take — ambiguous
// framing above all — is served by net/http (which may refuse it), never
// proxied by the fast path.
func TestHandedToNetHTTP(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, req string
	}{
		{"CL and TE", "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"two CLs", "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n"},
		{"negative CL", "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n"},
		{"overflowing CL", "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 184467440737095516160\r\n\r\n"},
		{"obs-fold", "GET /x HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n Content-Length: 5\r\n\r\n"},
		{"space before colon", "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n"},
		{"chunked body", "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"large body", "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 20000\r\n\r\n" + strings.Repeat("x", 20000)},
		{"HTTP/1.0", "GET /x HTTP/1.0\r\nHost: a\r\n\r\n"},
		{"declined", "GET /handoff HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"head larger than the buffer", "GET /x HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("b", readBufSize) + "\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			c, br := f.dial()
			// The request, then one the fast path would take: once a
			// connection is net/http's, it stays so.
			write(t, c, tc.req+"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
			resp, body := read(t, br, "GET")
			if resp.StatusCode != 400 && resp.Header.Get("X-Front") != "net/http" {
				t.Errorf("answered by the fast path: %d %q", resp.StatusCode, body)
			}
			if resp.StatusCode == 200 && !resp.Close {
				if resp, body := read(t, br, "GET"); resp.Header.Get("X-Front") != "net/http" || body != "fallback HTTP/1.1 /after 0" {
					t.Errorf("next request: %q", body)
				}
			}
			if n := f.fast.Load(); n != 0 {
				t.Errorf("the fast path took %d requests", n)
			}
		})
	}
}

// TestH2C: HTTP/2 with prior knowledge goes to net/http, which speaks it.
func TestH2C(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: &http.Transport{Protocols: p}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://" + f.addr + "/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || string(body) != "fallback HTTP/2.0 /x 0" {
		t.Errorf("%s %q", resp.Proto, body)
	}
}

// TestStreamingResponse: every upstream chunk reaches the client before
// the upstream sends the next.
func TestStreamingResponse(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c, br := f.dial()
	write(t, c, "GET /sse HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Errorf("content type %q", resp.Header.Get("Content-Type"))
	}
	events := bufio.NewReader(resp.Body)
	for i := range 3 {
		line, err := events.ReadString('\n')
		if err != nil || line != fmt.Sprintf("data: %d\n", i) {
			t.Fatalf("event %d: %q %v", i, line, err)
		}
		_, _ = events.ReadString('\n')
		if i < 2 {
			f.step <- struct{}{}
		}
	}
	if rest, err := io.ReadAll(events); err != nil || len(rest) != 0 {
		t.Errorf("after the stream: %q %v", rest, err)
	}
	// The connection is still good.
	write(t, c, "GET /answer HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, _ := read(t, br, "GET"); resp.StatusCode != 418 {
		t.Errorf("next: %d", resp.StatusCode)
	}
}

// TestClientGoes: a client that leaves — while the upstream has not
// answered yet, or in the middle of a stream — ends the upstream request.
func TestClientGoes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	t.Run("before the response", func(t *testing.T) {
		c, _ := f.dial()
		write(t, c, "GET /hang HTTP/1.1\r\nHost: a\r\n\r\n")
		<-f.started
		c.Close()
		<-f.canceled
	})
	t.Run("mid-stream", func(t *testing.T) {
		c, br := f.dial()
		write(t, c, "GET /sse HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if line, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil || line != "data: 0\n" {
			t.Fatalf("%q %v", line, err)
		}
		c.Close()
		<-f.canceled
	})
}

func TestUpstreamDown(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	c, br := f.dial()
	write(t, c, "GET /down HTTP/1.1\r\nHost: a\r\n\r\nGET /answer HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, body := read(t, br, "GET"); resp.StatusCode != 502 {
		t.Errorf("%d %q", resp.StatusCode, body)
	}
	if resp, _ := read(t, br, "GET"); resp.StatusCode != 418 {
		t.Errorf("next: %d", resp.StatusCode)
	}
}

// TestShutdown: at shutdown idle connections close at once and a stream
// in progress runs to its end.
func TestShutdown(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	idle, idleBR := f.dial()
	write(t, idle, "GET /answer HTTP/1.1\r\nHost: a\r\n\r\n")
	read(t, idleBR, "GET")

	c, br := f.dial()
	write(t, c, "GET /sse HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	events := bufio.NewReader(resp.Body)
	if line, _ := events.ReadString('\n'); line != "data: 0\n" {
		t.Fatalf("%q", line)
	}
	f.cancel()
	if _, err := idleBR.ReadByte(); err == nil {
		t.Error("the idle connection is still open")
	}
	f.step <- struct{}{}
	f.step <- struct{}{}
	rest, err := io.ReadAll(events)
	if err != nil || string(rest) != "\ndata: 1\n\ndata: 2\n\n" {
		t.Errorf("the stream after shutdown began: %q %v", rest, err)
	}
	if !resp.Close {
		// The connection closes after the response.
		if _, err := br.ReadByte(); err == nil {
			t.Error("the connection stayed open")
		}
	}
}

// forwardLoop serves the fast path (benchHandler) in front of an
// upstream that answers from a fixed buffer, and returns a round trip of
// one proxied request on a kept-alive connection (the client and upstream
// here allocate nothing per request). want is the response's length (0:
// learn it).
func forwardLoop(tb testing.TB) (roundTrip func(want int) int) {
	tb.Helper()
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}")
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { upLn.Close() })
	go func() {
		for {
			c, err := upLn.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				n := 0
				for {
					k, err := c.Read(buf[n:])
					if err != nil {
						return
					}
					n += k
					if i := bytes.Index(buf[:n], []byte("\r\n\r\n")); i >= 0 {
						n = copy(buf, buf[i+4:n])
						if _, err := c.Write(resp); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	up, _ := url.Parse("http://" + upLn.Addr().String())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := &Server{Fallback: &http.Server{Handler: http.NotFoundHandler()}}
	s.SetHandler(benchHandler{up}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln, time.Second) }()
	tb.Cleanup(func() { cancel(); <-served })

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	req := []byte("POST /v1/chat/completions HTTP/1.1\r\nHost: model-chat.bench.localhost\r\nContent-Type: application/json\r\n" +
		"X-API-Key: ig_0123456789\r\nContent-Length: 11\r\n\r\n{\"ok\":true}")
	buf := make([]byte, 4096)
	// The response's length, learnt from the first one (the Date varies
	// but not its length).
	return func(want int) int {
		if _, err := c.Write(req); err != nil {
			tb.Fatal(err)
		}
		n := 0
		for n == 0 || (want > 0 && n < want) || (want == 0 && !strings.HasSuffix(string(buf[:n]), "{\"ok\":true}")) {
			k, err := c.Read(buf[n:])
			if err != nil {
				tb.Fatal(err)
			}
			n += k
		}
		return n
	}
}

// BenchmarkForward is one proxied request on a kept-alive connection: the
// fast path's own cost and allocations.
func BenchmarkForward(b *testing.B) {
	roundTrip := forwardLoop(b)
	size := roundTrip(0)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		roundTrip(size)
	}
}

// TestForwardDoesNotAllocate pins the fast path's cost in garbage: a
// proxied request on a kept-alive connection allocates nothing (the
// request head is copied into the connection's own buffer, not into a
// new string), so the collector does not run because of traffic.
func TestForwardDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("under the race detector sync.Pool drops buffers on purpose; make test runs this without it")
	}
	roundTrip := forwardLoop(t)
	size := roundTrip(0)
	// AllocsPerRun counts the whole process's allocations: the average
	// over many requests stays under one only if requests make none.
	if n := testing.AllocsPerRun(2000, func() { roundTrip(size) }); n >= 0.5 {
		t.Errorf("a proxied request allocates %.2f times", n)
	}
}

type benchHandler struct{ up *url.URL }

func (h benchHandler) ServeH1(c *Conn, req *Request) bool {
	for i := range req.Header {
		if strings.EqualFold(req.Header[i].Name, "X-Api-Key") {
			req.Header[i].Drop = true
		}
	}
	c.Forward(req, h.up)
	return true
}

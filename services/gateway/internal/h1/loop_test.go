package h1

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"
)

// rawUpstream accepts the gateway's connection on f.raw and reads one
// request head from it.
func (f *fixture) rawUpstream() (net.Conn, *bufio.Reader) {
	f.t.Helper()
	c, err := f.raw.Accept()
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { c.Close() })
	// A bound, so that a test that goes wrong fails instead of hanging.
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			f.t.Fatal(err)
		}
		if line == "\r\n" {
			return c, br
		}
	}
}

const sseHead = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"

// rawStream is a stream through the front end from f's raw upstream,
// its first chunk ("data") read by the client.
type rawStream struct {
	c    net.Conn      // the client's connection
	br   *bufio.Reader // the client's reader
	body io.Reader     // the response body, as the client reads it
	up   net.Conn      // the upstream's side
	upBR *bufio.Reader
}

func (f *fixture) openStream() rawStream {
	f.t.Helper()
	c, br := f.dial()
	// A bound, so that a test that goes wrong fails instead of hanging.
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	write(f.t, c, "GET /raw/sse HTTP/1.1\r\nHost: a\r\n\r\n")
	up, upBR := f.rawUpstream()
	write(f.t, up, sseHead+"4\r\ndata\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(resp.Body, got); err != nil || string(got) != "data" {
		f.t.Fatalf("the first chunk: %q %v", got, err)
	}
	return rawStream{c, br, resp.Body, up, upBR}
}

// TestStreamInPieces: a chunked stream whose framing the upstream sends
// cut anywhere — mid-chunk, between a chunk and its CRLF, in a size
// line — with extensions and a trailer reaches the client whole and in
// order, whether an event loop or the stream's goroutine carries each
// piece, and the connection serves the next request.
func TestStreamInPieces(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	st := f.openStream()
	steps := []struct{ send, see string }{
		{"5\r\nhello\r\n", "hello"},
		{"5\r\nwor", "wor"},
		{"ld\r", "ld"},
		{"\n3", ""},
		{"\r\nabc\r\n1", "abc"},
		{"0\r\n0123456789abcdef\r\n", "0123456789abcdef"},
		{"3;ext=1\r\nxyz\r\n", "xyz"},
		{"2\r\nok\r\n", "ok"},
		{"0\r\nX-Trailer: 1\r\n\r\n", ""},
	}
	for i, s := range steps {
		write(t, st.up, s.send)
		got := make([]byte, len(s.see))
		if _, err := io.ReadFull(st.body, got); err != nil || string(got) != s.see {
			t.Fatalf("step %d: %q %v, want %q", i, got, err, s.see)
		}
	}
	if rest, err := io.ReadAll(st.body); err != nil || len(rest) != 0 {
		t.Fatalf("after the last chunk: %q %v", rest, err)
	}
	if _, total := f.s.ParkedStreams(); runtime.GOOS == "linux" && total == 0 {
		t.Error("no event loop carried the stream")
	}
	write(t, st.c, "GET /answer HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, _ := read(t, st.br, "GET"); resp.StatusCode != http.StatusTeapot {
		t.Errorf("next request: %d", resp.StatusCode)
	}
}

// TestStreamClientLeavesWhileParked: a client that closes its
// connection while its stream waits for the upstream ends the upstream
// request at once — not at the next chunk, which may never come.
func TestStreamClientLeavesWhileParked(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	st := f.openStream()
	st.c.Close()
	// The gateway closes its upstream connection: the upstream reads its
	// end (within rawUpstream's bound, else the test fails).
	if b, err := io.ReadAll(st.upBR); err != nil || len(b) != 0 {
		t.Fatalf("the upstream connection: %q %v", b, err)
	}
}

// TestStreamSlowClient: a client that reads slowly gets every byte of a
// stream that sends faster than it reads (the event loop hands such a
// stream back to its goroutine, which waits for the client).
func TestStreamSlowClient(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	st := f.openStream()
	up := st.up
	chunk := bytes.Repeat([]byte("x"), 16<<10)
	const chunks = 256 // 4 MiB: more than the sockets buffer between them
	go func() {
		for range chunks {
			if _, err := up.Write(append([]byte("4000\r\n"), append(chunk, "\r\n"...)...)); err != nil {
				return
			}
		}
		_, _ = io.WriteString(up, "0\r\n\r\n")
	}()
	n, err := io.Copy(io.Discard, iotestSlow{st.body})
	if err != nil || n != chunks*int64(len(chunk)) {
		t.Fatalf("read %d bytes (%v), want %d", n, err, chunks*len(chunk))
	}
}

// iotestSlow reads a little at a time.
type iotestSlow struct{ r io.Reader }

func (s iotestSlow) Read(p []byte) (int, error) { return s.r.Read(p[:min(len(p), 512)]) }

// TestStreamShutdownGrace: a stream still open when shutdown's grace
// ends is closed, and Serve returns.
func TestStreamShutdownGrace(t *testing.T) {
	t.Parallel()
	f := newFixtureGrace(t, 50*time.Millisecond)
	st := f.openStream()
	f.cancel()
	if _, err := io.ReadAll(st.body); err == nil {
		t.Error("the stream ended cleanly; it was cut off at shutdown and must say so")
	}
}

package h1

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
)

// Differential fuzzing (issue 12): the fast path's parsers against
// net/http's, which is the reference for what is an error. A request or
// response the fast path takes must be one net/http takes too, with the
// same meaning (method, target, host, framing, connection handling):
// request smuggling and response splitting need two parties that read
// one message two ways. `go test` runs the seeds below (the smuggling
// cases) as a normal test; `make fuzz` runs the fuzzers for longer.

// requestSeeds are heads of smuggling and framing tricks, and plain ones.
var requestSeeds = []string{
	"POST /v1/chat/completions HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\nX-Api-Key: k\r\n\r\nhello",
	"GET /v1/models?x=1&y=%2F HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n",
	// duplicate Content-Length, same and different, and spelled apart
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 05\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 \r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nhello",
	// CL and TE, both orders, and TE variants
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
	// obs-fold
	"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\t5\r\n\r\n",
	" GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	// bare LF and bare CR
	"GET / HTTP/1.1\nHost: a\n\n",
	"GET / HTTP/1.1\r\nHost: a\nContent-Length: 5\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n",
	// hosts
	"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	"GET / HTTP/1.1\r\n\r\n",
	"GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
	// request line
	"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.10\r\nHost: a\r\n\r\n",
	"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
	"G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /%00 HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /?a=%zz HTTP/1.1\r\nHost: a\r\n\r\n",
	// control bytes and obs-text in values, odd names
	"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX: \xff\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX\x7f: v\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, x-other\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n",
	// a length over int64, and chunk-size overflow in a body
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nx\r\n0\r\n\r\n",
}

func FuzzRequestAgainstNetHTTP(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		n := headEnd([]byte(in))
		if n < 0 {
			return
		}
		var r Request
		if !r.parse(in[:n], MaxBody) {
			return // net/http's to judge
		}
		std, err := http.ReadRequest(bufio.NewReader(strings.NewReader(in)))
		if err != nil {
			t.Fatalf("the fast path takes what net/http refuses (%v):\n%q", err, in[:n])
		}
		// What net/http's server adds to ReadRequest.
		if len(std.Header["Host"]) > 0 || std.Host == "" {
			t.Fatalf("net/http's server refuses a Host: %q", in[:n])
		}
		switch {
		case std.Method != r.Method:
			t.Fatalf("method %q, net/http %q", r.Method, std.Method)
		// Decoded and as sent upstream (EscapedPath: "/!" stays "/!").
		case std.URL.Path != r.Path || std.URL.EscapedPath() != r.Path || std.URL.RawQuery != r.Query:
			t.Fatalf("target %q ? %q, net/http %q (sent as %q) ? %q", r.Path, r.Query, std.URL.Path, std.URL.EscapedPath(), std.URL.RawQuery)
		case std.Host != r.Host:
			t.Fatalf("host %q, net/http %q", r.Host, std.Host)
		case len(std.TransferEncoding) > 0:
			t.Fatalf("net/http reads a transfer coding: %q", in[:n])
		case std.ContentLength != max(r.ContentLength, 0):
			t.Fatalf("length %d, net/http %d", r.ContentLength, std.ContentLength)
		case std.Close != r.Close:
			t.Fatalf("close %v, net/http %v", r.Close, std.Close)
		}
		// Every field the fast path passes on, as net/http reads it.
		got := map[string][]string{}
		for _, fl := range r.Header {
			if !strings.EqualFold(fl.Name, "Host") {
				k := http.CanonicalHeaderKey(fl.Name)
				got[k] = append(got[k], fl.Value)
			}
		}
		for k, v := range got {
			if strings.Join(v, "\x00") != strings.Join(std.Header[k], "\x00") {
				t.Fatalf("%s: %q, net/http %q", k, v, std.Header[k])
			}
		}
		if len(got) != len(std.Header) {
			t.Fatalf("fields %q, net/http %q", got, std.Header)
		}
	})
}

// responseSeeds are upstream responses: framing tricks and plain ones.
var responseSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: x\n\n",
	"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 204 No Content\r\n\r\n",
	"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
	// duplicate and odd Content-Length
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 05\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
	"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
	// CL and TE
	"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	// obs-fold, bare LF, control bytes
	"HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 0\nX: y\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX : y\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n",
	// status lines
	"HTTP/1.1 2000 OK\r\n\r\n",
	"HTTP/1.1 20 OK\r\n\r\n",
	"HTTP/2.0 200 OK\r\n\r\n",
	"HTTP/1.1 101 Switching Protocols\r\n\r\n",
	// chunk-size overflow, bad chunk endings, trailers
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nx\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: v\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: v\n\r\n",
	"HTTP/1.1 200 OK\r\nConnection: close, x-drop\r\nX-Drop: 1\r\nContent-Length: 0\r\n\r\n",
}

func FuzzResponseAgainstNetHTTP(f *testing.F) {
	for _, s := range responseSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		i := strings.Index(in, "\r\n\r\n")
		if i < 0 {
			return
		}
		head, rest := []byte(in[:i+4]), in[i+4:]
		r, err := parseResponseHead(head)
		if err != nil {
			return
		}
		std, err := http.ReadResponse(bufio.NewReader(strings.NewReader(in)), &http.Request{Method: http.MethodGet})
		if err != nil {
			t.Fatalf("the fast path takes a response net/http refuses (%v):\n%q", err, head)
		}
		if std.StatusCode != r.status {
			t.Fatalf("status %d, net/http %d", r.status, std.StatusCode)
		}
		if r.status == http.StatusNoContent || r.status == http.StatusNotModified {
			return // no body, whatever the head says
		}
		chunked := len(std.TransferEncoding) == 1 && std.TransferEncoding[0] == "chunked"
		switch {
		case chunked != r.chunked:
			t.Fatalf("chunked %v, net/http %q", r.chunked, std.TransferEncoding)
		case !r.chunked && std.ContentLength != r.length:
			t.Fatalf("length %d, net/http %d", r.length, std.ContentLength)
		case std.Close != (r.close || (!r.chunked && r.length < 0)):
			t.Fatalf("close %v (length %d), net/http %v", r.close, r.length, std.Close)
		}
		// The body as the fast path relays it (its decoder, read in small
		// pieces, its buffered reader replaced whenever it is empty as the
		// relay does between chunks), against net/http's.
		want, stdErr := io.ReadAll(std.Body)
		// One byte per read from the "network": the buffered reader runs
		// empty, and is replaced, all the time.
		src := iotest.OneByteReader(strings.NewReader(rest))
		br := bufio.NewReaderSize(src, maxChunkLineLength)
		rl := relay{mode: bodyUntilClose}
		switch {
		case r.chunked:
			rl.mode = bodyChunked
		case r.length >= 0:
			rl.mode, rl.left = bodyLength, r.length
		}
		var got []byte
		piece := make([]byte, 7)
		for {
			k, e := rl.read(br, piece)
			got = append(got, piece[:k]...)
			if e == io.EOF {
				if r.chunked {
					err = readTrailer(br)
				}
				break
			}
			if e != nil {
				err = e
				break
			}
			if br.Buffered() == 0 {
				br = bufio.NewReaderSize(src, maxChunkLineLength)
			}
		}
		if err == nil && stdErr != nil {
			t.Fatalf("the fast path relays a body net/http refuses (%v): %q", stdErr, in)
		}
		if err == nil && !bytes.Equal(got, want) {
			t.Fatalf("body %q, net/http %q", got, want)
		}
		// The same body carried by an event loop between chunks: it must
		// come out exactly as the goroutine's relay has it.
		viaLoop, loopErr := relayViaLoop(rl.mode, r.length, []byte(rest), 1+len(in)%13)
		if (loopErr == nil) != (err == nil) {
			t.Fatalf("through the event loop: error %v, without: %v (%q)", loopErr, err, in)
		}
		if err == nil && !bytes.Equal(viaLoop, got) {
			t.Fatalf("through the event loop: body %q, without %q", viaLoop, got)
		}
	})
}

// relayViaLoop decodes body as relay does with an event loop: while the
// stream is parked, each read from the network (piece bytes at most)
// goes to chunkedReader.scan; what scan does not take is given back and
// read by relay's own decoder, through a buffered reader, until that
// reader runs empty and the stream is parked again — unless scan found
// framing it does not take, which keeps the stream on its goroutine.
func relayViaLoop(mode int, length int64, body []byte, piece int) ([]byte, error) {
	rl := relay{mode: mode, left: length}
	net := bytes.NewReader(body)
	var got, unread []byte
	parked := mode == bodyChunked || mode == bodyUntilClose
	buf := make([]byte, piece)
	out := make([]byte, 7)
	for {
		if parked && !rl.noLoop {
			n, _ := net.Read(buf)
			in := buf[:n]
			if n == 0 {
				parked = false // the upstream's end: handed back
				continue
			}
			used := n
			if mode == bodyChunked {
				var odd bool
				got, used, odd = rl.cr.scan(got, in)
				rl.noLoop = odd && used < n
			} else {
				got = append(got, in...)
			}
			if used < n {
				unread = append([]byte(nil), in[used:]...)
				parked = false
			}
			continue
		}
		br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(unread), iotest.OneByteReader(net)), maxChunkLineLength)
		unread = nil
		for {
			k, e := rl.read(br, out)
			got = append(got, out[:k]...)
			if e == io.EOF {
				if mode == bodyChunked {
					return got, readTrailer(br)
				}
				return got, nil
			}
			if e != nil {
				return got, e
			}
			if br.Buffered() == 0 && (mode == bodyChunked || mode == bodyUntilClose) {
				parked = true
				break
			}
		}
	}
}

package h1

import (
	"strings"
	"testing"
)

// TestParse: what the fast path takes, and everything it must leave to
// net/http — above all, every request with more than one reading.
func TestParse(t *testing.T) {
	t.Parallel()
	const ok = "POST /v1/chat/completions HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\nX-Api-Key: k\r\n\r\n"
	for _, tc := range []struct {
		name string
		head string
		take bool
	}{
		{"plain POST", ok, true},
		{"GET without body", "GET /v1/models?x=1&y=%2F HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"Connection: close", "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n", true},
		{"OWS around values", "GET / HTTP/1.1\r\nHost:a\r\nX:  \t v \t\r\n\r\n", true},
		{"CL zero", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", true},
		{"CL at the limit", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 16384\r\n\r\n", true},

		// Smuggling and framing.
		{"CL and TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"TE and CL", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", false},
		{"chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"TE with odd case", "POST / HTTP/1.1\r\nHost: a\r\ntransfer-ENCODING: identity\r\n\r\n", false},
		{"two CLs, same", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", false},
		{"two CLs, different", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\n", false},
		{"CL list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", false},
		{"negative CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", false},
		{"signed CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", false},
		{"hex CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", false},
		{"empty CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", false},
		{"overflowing CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", false},
		{"CL over the body limit", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 16385\r\n\r\n", false},
		{"space before colon", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n", false},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", false},
		{"obs-fold with tab", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n", false},
		{"bare LF line", "GET / HTTP/1.1\nHost: a\r\n\r\n", false},
		{"bare LF end", "GET / HTTP/1.1\r\nHost: a\n\n", false},
		{"bare CR in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n", false},
		{"NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n", false},
		{"obs-text in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: caf\xc3\xa9\r\n\r\n", false},
		{"empty field name", "GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n", false},
		{"no colon", "GET / HTTP/1.1\r\nHost: a\r\nX-A\r\n\r\n", false},

		// Not for the fast path.
		{"HTTP/1.0", "GET / HTTP/1.0\r\nHost: a\r\n\r\n", false},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false},
		{"absolute form", "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", false},
		{"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"escaped path", "GET /a%2Fb HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"semicolon in query", "GET /?a=1;b=2 HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"bad escape in query", "GET /?a=%zz HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"two spaces", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"no Host", "GET / HTTP/1.1\r\nX: y\r\n\r\n", false},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", false},
		{"Host with a slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", false},
		{"Upgrade", "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", false},
		{"Expect", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n", false},
		{"TE", "GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n", false},
		{"Trailer", "GET / HTTP/1.1\r\nHost: a\r\nTrailer: X\r\n\r\n", false},
		{"Connection naming a header", "GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Secret\r\nX-Secret: 1\r\n\r\n", false},
		{"bad method", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := headEnd([]byte(tc.head))
			if n < 0 {
				if tc.take {
					t.Fatalf("no head end found in %q", tc.head)
				}
				return // never a head: it would fill the buffer and go to net/http
			}
			var r Request
			if got := r.parse(tc.head[:n], MaxBody); got != tc.take {
				t.Errorf("parse(%q) = %v, want %v", tc.head, got, tc.take)
			}
		})
	}
}

func TestParseFields(t *testing.T) {
	t.Parallel()
	var r Request
	head := "POST /d/p/d/v1/x?q=1 HTTP/1.1\r\nhost: H.example:80\r\nContent-Length: 12\r\nX-Forwarded-For: 6.6.6.6\r\n" +
		"Keep-Alive: 5\r\nProxy-Authorization: x\r\nForwarded: for=6.6.6.6\r\nX-Api-Key:  k \r\nConnection: close\r\n\r\n"
	if !r.parse(head, MaxBody) {
		t.Fatal("not taken")
	}
	if r.Method != "POST" || r.Path != "/d/p/d/v1/x" || r.Query != "q=1" || r.Host != "H.example:80" || r.ContentLength != 12 || !r.Close {
		t.Errorf("%+v", r)
	}
	var kept []string
	for _, f := range r.Header {
		if !f.Drop {
			kept = append(kept, f.Name+"="+f.Value)
		}
	}
	if got := strings.Join(kept, ","); got != "X-Api-Key=k" {
		t.Errorf("fields going upstream: %s", got)
	}
	if v, ok := r.Get("x-api-key"); !ok || v != "k" {
		t.Errorf("Get: %q %v", v, ok)
	}
}

func TestHeadEnd(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int{
		"GET / HTTP/1.1\r\n\r\n":       18,
		"GET / HTTP/1.1\r\n\r\nXYZ":    18,
		"GET / HTTP/1.1\n\nX":          16,
		"GET / HTTP/1.1\r\nA: b\r\n":   -1,
		"GET / HTTP/1.1\r\nA: b\r\n\r": -1,
		"GET / HTTP/1.1\r\n":           -1,
		"":                             -1,
	} {
		if got := headEnd([]byte(in)); got != want {
			t.Errorf("headEnd(%q) = %d, want %d", in, got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
	f.Add("GET /?a=%41 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	f.Fuzz(func(t *testing.T, head string) {
		n := headEnd([]byte(head))
		if n < 0 {
			return
		}
		var r Request
		if !r.parse(head[:n], MaxBody) {
			return
		}
		// What is taken is unambiguous: no CR or LF in any field, one
		// length, no Transfer-Encoding.
		cls := 0
		for _, fl := range r.Header {
			if strings.ContainsAny(fl.Name+fl.Value, "\r\n\x00") {
				t.Fatalf("control byte in %q: %q", fl.Name, fl.Value)
			}
			if strings.EqualFold(fl.Name, "Content-Length") {
				cls++
			}
			if strings.EqualFold(fl.Name, "Transfer-Encoding") {
				t.Fatal("took a Transfer-Encoding")
			}
		}
		if cls > 1 || (cls == 0) != (r.ContentLength < 0) || r.ContentLength > MaxBody {
			t.Fatalf("lengths: %d fields, %d", cls, r.ContentLength)
		}
		if strings.ContainsAny(r.Path+r.Query+r.Host, " \r\n\x00") {
			t.Fatalf("target %q %q %q", r.Path, r.Query, r.Host)
		}
	})
}

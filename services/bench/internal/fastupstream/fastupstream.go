// Package fastupstream is the load benchmark's model server: it answers
// every request with the same small OpenAI-style chat completion, as fast
// as net/http allows, so what a proxy in front of it costs shows up.
package fastupstream

import (
	"io"
	"net/http"
	"strconv"
)

// Body is the fixed answer: a chat completion of the size a short reply
// has (~300 bytes).
const Body = `{"id":"chatcmpl-bench0000000000","object":"chat.completion","created":1767225600,"model":"bench-model",` +
	`"choices":[{"index":0,"message":{"role":"assistant","content":"Hello! This is a fixed answer from the benchmark upstream."},` +
	`"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}` + "\n"

var (
	body          = []byte(Body)
	contentLength = []string{strconv.Itoa(len(Body))}
	contentType   = []string{"application/json"}
)

// Handler answers every request with Body, after reading the request's
// body to its end (so keep-alive connections stay usable).
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		h := w.Header()
		// Shared slices, not Set: the header map keeps them and nobody
		// changes them, so an answer allocates no header values.
		h["Content-Type"] = contentType
		h["Content-Length"] = contentLength
		_, _ = w.Write(body)
	})
}

// Package demomodel is a small, deterministic OpenAI-compatible model
// server, clearly marked as a demo: it answers /v1/models,
// /v1/chat/completions (with and without "stream": true),
// /v1/completions, /v1/embeddings and /health, so the one-process stack,
// tests and benchmarks have an upstream to put infergate in front of. It
// runs no model: every answer is derived from the request's text.
package demomodel

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"strings"
	"time"
)

// ModelID is the only model the demo serves.
const ModelID = "infergate-demo"

// Header marks every demo response, so nobody mistakes it for a model.
const Header = "X-Infergate-Demo"

// Server is the demo model server.
type Server struct {
	// ChunkDelay is the pause between streamed chunks; 0 streams at once.
	ChunkDelay time.Duration
	// Now is the clock for "created" fields; default time.Now.
	Now func() time.Time
}

// Handler serves the demo API under prefix (e.g. "" or "/demo-model").
func (s *Server) Handler(prefix string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+prefix+"/v1/models", s.models)
	mux.HandleFunc("POST "+prefix+"/v1/chat/completions", s.chat)
	mux.HandleFunc("POST "+prefix+"/v1/completions", s.completions)
	mux.HandleFunc("POST "+prefix+"/v1/embeddings", s.embeddings)
	mux.HandleFunc("GET "+prefix+"/health", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set(Header, "true")
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "note": "infergate demo model, not a real model"})
	})
	return mux
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]any{"error": map[string]any{
		"message": msg, "type": "invalid_request_error", "code": nil,
	}})
}

func (s *Server) models(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set(Header, "true")
	writeJSON(w, http.StatusOK, map[string]any{
		"object": "list",
		"data": []map[string]any{{
			"id": ModelID, "object": "model", "created": 1767225600, "owned_by": "infergate-demo",
		}},
	})
}

type message struct {
	Role    string `json:"role"`
	Content any    `json:"content"`
}

// text flattens a message's content: a string, or an array of parts.
func (m message) text() string {
	switch c := m.Content.(type) {
	case string:
		return c
	case []any:
		var parts []string
		for _, p := range c {
			if part, ok := p.(map[string]any); ok {
				if t, ok := part["text"].(string); ok {
					parts = append(parts, t)
				}
			}
		}
		return strings.Join(parts, " ")
	}
	return ""
}

type chatRequest struct {
	Model         string    `json:"model"`
	Messages      []message `json:"messages"`
	Stream        bool      `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func newUsage(prompt, completion string) usage {
	p, c := tokens(prompt), tokens(completion)
	return usage{PromptTokens: p, CompletionTokens: c, TotalTokens: p + c}
}

// tokens counts whitespace-separated words: the demo's "tokenizer".
func tokens(s string) int { return len(strings.Fields(s)) }

// Answer is the demo's deterministic reply to a prompt.
func Answer(prompt string) string {
	prompt = strings.Join(strings.Fields(prompt), " ")
	if len(prompt) > 200 {
		prompt = prompt[:200] + "…"
	}
	if prompt == "" {
		return "Hello from the infergate demo model. This is not a real model: it only echoes what you send."
	}
	return fmt.Sprintf("Hello from the infergate demo model. You said: %q. This is not a real model: it only echoes what you send.", prompt)
}

func id(prefix, text string) string {
	h := fnv.New64a()
	_, _ = io.WriteString(h, text)
	return fmt.Sprintf("%s-demo%012x", prefix, h.Sum64()&0xffffffffffff)
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(Header, "true")
	var req chatRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 4<<20)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		return
	}
	if len(req.Messages) == 0 {
		writeError(w, http.StatusBadRequest, "messages is required")
		return
	}
	var prompt, last string
	for _, m := range req.Messages {
		prompt += m.text() + " "
		if m.Role == "user" {
			last = m.text()
		}
	}
	answer := Answer(last)
	u := newUsage(prompt, answer)
	cid := id("chatcmpl", prompt)
	created := s.now().Unix()
	if !req.Stream {
		writeJSON(w, http.StatusOK, map[string]any{
			"id": cid, "object": "chat.completion", "created": created, "model": ModelID,
			"choices": []map[string]any{{
				"index":         0,
				"message":       map[string]any{"role": "assistant", "content": answer},
				"finish_reason": "stop",
			}},
			"usage": u,
		})
		return
	}
	chunk := func(delta map[string]any, finish any) map[string]any {
		return map[string]any{
			"id": cid, "object": "chat.completion.chunk", "created": created, "model": ModelID,
			"choices": []map[string]any{{"index": 0, "delta": delta, "finish_reason": finish}},
		}
	}
	sse := newSSE(w, s.ChunkDelay)
	sse.send(chunk(map[string]any{"role": "assistant", "content": ""}, nil))
	for _, word := range strings.SplitAfter(answer, " ") {
		if !sse.pause(r) {
			return
		}
		sse.send(chunk(map[string]any{"content": word}, nil))
	}
	sse.send(chunk(map[string]any{}, "stop"))
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		sse.send(map[string]any{
			"id": cid, "object": "chat.completion.chunk", "created": created, "model": ModelID,
			"choices": []any{}, "usage": u,
		})
	}
	sse.done()
}

type completionRequest struct {
	Model  string `json:"model"`
	Prompt any    `json:"prompt"`
	Stream bool   `json:"stream"`
}

func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(Header, "true")
	var req completionRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 4<<20)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		return
	}
	prompt, _ := req.Prompt.(string)
	answer := Answer(prompt)
	cid := id("cmpl", prompt)
	created := s.now().Unix()
	if !req.Stream {
		writeJSON(w, http.StatusOK, map[string]any{
			"id": cid, "object": "text_completion", "created": created, "model": ModelID,
			"choices": []map[string]any{{"index": 0, "text": answer, "finish_reason": "stop"}},
			"usage":   newUsage(prompt, answer),
		})
		return
	}
	sse := newSSE(w, s.ChunkDelay)
	for _, word := range strings.SplitAfter(answer, " ") {
		if !sse.pause(r) {
			return
		}
		sse.send(map[string]any{
			"id": cid, "object": "text_completion", "created": created, "model": ModelID,
			"choices": []map[string]any{{"index": 0, "text": word, "finish_reason": nil}},
		})
	}
	sse.done()
}

func (s *Server) embeddings(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(Header, "true")
	var req struct {
		Input any `json:"input"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 4<<20)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		return
	}
	var inputs []string
	switch in := req.Input.(type) {
	case string:
		inputs = []string{in}
	case []any:
		for _, v := range in {
			if s, ok := v.(string); ok {
				inputs = append(inputs, s)
			}
		}
	}
	var data []map[string]any
	total := 0
	for i, in := range inputs {
		h := fnv.New64a()
		_, _ = io.WriteString(h, in)
		seed := h.Sum64()
		vec := make([]float64, 8)
		for j := range vec {
			seed = seed*6364136223846793005 + 1442695040888963407
			vec[j] = float64(int64(seed>>11)%2000-1000) / 1000
		}
		data = append(data, map[string]any{"object": "embedding", "index": i, "embedding": vec})
		total += tokens(in)
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"object": "list", "data": data, "model": ModelID,
		"usage": map[string]int{"prompt_tokens": total, "total_tokens": total},
	})
}

// sse writes server-sent events, flushing each one.
type sse struct {
	w     http.ResponseWriter
	rc    *http.ResponseController
	delay time.Duration
}

func newSSE(w http.ResponseWriter, delay time.Duration) *sse {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	return &sse{w: w, rc: http.NewResponseController(w), delay: delay}
}

func (s *sse) send(v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintf(s.w, "data: %s\n\n", b)
	_ = s.rc.Flush()
}

// pause waits between chunks; false when the client went away.
func (s *sse) pause(r *http.Request) bool {
	if s.delay <= 0 {
		return r.Context().Err() == nil
	}
	select {
	case <-r.Context().Done():
		return false
	case <-time.After(s.delay):
		return true
	}
}

func (s *sse) done() {
	fmt.Fprint(s.w, "data: [DONE]\n\n")
	_ = s.rc.Flush()
}

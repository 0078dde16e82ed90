// Package pace lets long work on the cores that serve requests give way
// to them: the usage flush (tally) and a busy event loop (h1) work in
// slices of about Slice and sleep a microsecond between them.
//
// A sleep, not runtime.Gosched. Gosched puts the goroutine at the back of
// the global run queue, and the scheduler takes it from there again
// before it polls the network (findRunnable polls only when no goroutine
// is runnable): with one P (the gateway pinned to one core), a request or
// an auth map update that arrives meanwhile is noticed only by sysmon's
// poll, every 10 ms. A sleeping goroutine leaves nothing runnable but the
// others: the scheduler runs those that wait, polls the network, and takes
// the sleeper back when its timer is due (it checks timers at every
// schedule). tally.BenchmarkFlushDelaysRequests measures it.
//
// With nothing else to run, a sleep under a millisecond lasts up to one
// (the poller waits in milliseconds), unless a socket wakes the poller
// first: long work on an idle process takes a little longer.
package pace

import "time"

// Slice is how long work runs before it pauses.
const Slice = 200 * time.Microsecond

// pauseFor is the sleep between two slices: the shortest there is.
const pauseFor = time.Microsecond

// Pacer slices one piece of work; its zero value is ready (its first
// slice starts at Begin, or ends at the first At).
type Pacer struct {
	// Off: never pause (benchmarks of the work alone).
	Off   bool
	start time.Time // of the current slice
}

// Begin starts a slice: the work has just started, or has waited.
func (p *Pacer) Begin() { p.start = time.Now() }

// At is a point of a loop where the work may pause: every n-th (i is the
// loop's index; n work items take a few tens of µs), it calls Check.
func (p *Pacer) At(i, n int) {
	if i%n == n-1 {
		p.Check()
	}
}

// Check pauses if the slice is over. It reads the clock: call it every
// few tens of µs of work, not more often.
func (p *Pacer) Check() {
	if !p.Off && time.Since(p.start) >= Slice {
		time.Sleep(pauseFor)
		p.Begin()
	}
}

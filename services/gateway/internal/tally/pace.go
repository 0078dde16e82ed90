package tally

import "time"

// A flush of many pairs is tens of milliseconds of work, on the cores
// that serve requests (with the gateway on one core, on the only P). It
// works in slices of about pauseAfter and sleeps pauseFor between them.
//
// A sleep, not runtime.Gosched: Gosched puts the flush at the back of the
// global run queue, and the scheduler takes it from there again before it
// polls the network (findRunnable polls only when no goroutine is
// runnable), so a request that arrives during a flush is noticed only by
// sysmon's poll, every 10 ms. A sleeping flush leaves nothing runnable but
// the requests: the scheduler runs those that wait, polls the network, and
// takes the flush back when its timer is due. Measured in
// BenchmarkFlushDelaysRequests: a request's wait behind a flush of 100,000
// pairs went from milliseconds to the slice's length.
//
// With nothing else to run, a sleep under a millisecond lasts one (the
// poller's wait is in milliseconds): a flush of 100,000 pairs on an idle
// gateway takes a few hundred milliseconds longer, which nobody waits for.
const (
	pauseAfter = 200 * time.Microsecond
	pauseFor   = time.Microsecond
	// yieldEvery is how many rows (16 times as many table cells) a flush
	// handles between two looks at the clock (~50 µs of work).
	yieldEvery = 64
)

// pacer slices one flush's work.
type pacer struct {
	// off: never pause (benchmarks of the work alone).
	off   bool
	start time.Time // of the current slice
}

// begin starts a flush's first slice.
func (p *pacer) begin() { p.start = time.Now() }

// at is a point of a loop where the flush may pause: every n-th (i is the
// loop's index), it pauses if its slice is over.
func (p *pacer) at(i, n int) {
	if p.off || i%n != n-1 {
		return
	}
	if time.Since(p.start) >= pauseAfter {
		time.Sleep(pauseFor)
		p.start = time.Now()
	}
}

package deployservice

import (
	"cmp"
	"slices"
	"sync"
	"time"

	"github.com/infergate/infergate/services/internal/aggregate"
	"github.com/infergate/infergate/services/internal/eventstore"
)

// maxFolds bounds how many deployments' folded states are kept.
const maxFolds = 10_000

// folds keeps each recently changed deployment's state as folded up to a
// record, so the next command folds only the records appended since
// instead of the deployment's whole history, which grows with every link
// change: at 16,000 records, folding it all was a fifth of LinkKey's CPU
// (docs/benchmarks.md, control-plane writes).
type folds struct {
	mu sync.Mutex // mu protects m
	m  map[string]folded
}

type folded struct {
	// seq and at are the last record folded in: a stream created again
	// starts its sequences over, so a sequence alone could name another
	// record.
	seq uint64
	at  time.Time
	d   aggregate.Deployment // never changed once stored
}

// fold returns the deployment folded from records, its whole history in
// stream order, reusing the state kept for subject when records extend
// it. The result is the caller's to read; commands do not change it.
func (f *folds) fold(subject, name string, records []eventstore.Record) aggregate.Deployment {
	f.mu.Lock()
	prev, ok := f.m[subject]
	f.mu.Unlock()
	d, rest := aggregate.Deployment{Name: name}, records
	if ok {
		i, found := slices.BinarySearchFunc(records, prev.seq, func(r eventstore.Record, seq uint64) int {
			return cmp.Compare(r.Sequence, seq)
		})
		if found && records[i].Time.Equal(prev.at) {
			d, rest = prev.d.Clone(), records[i+1:]
		}
	}
	for _, r := range rest {
		for _, e := range r.Events {
			d.Apply(e)
		}
	}
	if len(records) > 0 && len(rest) > 0 {
		last := records[len(records)-1]
		f.mu.Lock()
		if f.m == nil {
			f.m = map[string]folded{}
		}
		if _, ok := f.m[subject]; !ok && len(f.m) >= maxFolds {
			for k := range f.m { // drop one at random
				delete(f.m, k)
				break
			}
		}
		f.m[subject] = folded{seq: last.Sequence, at: last.Time, d: d}
		f.mu.Unlock()
	}
	return d
}

package faults_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is one child process: started, killed, restarted with the same
// arguments. Its output is kept (the last 256 KiB) and shown when the test
// fails.
type proc struct {
	t    *testing.T
	name string
	bin  string
	args []string

	mu   sync.Mutex // mu protects the fields below
	cmd  *exec.Cmd
	out  *tailBuffer
	done chan struct{}
	err  error // the exit, once done is closed
	// expectExit marks an exit the test caused (kill, stop).
	expectExit bool
}

func startProc(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, bin: bin, args: args, out: &tailBuffer{max: 256 << 10}}
	p.start()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- %s output (tail) ---\n%s", p.name, p.out.tail(25))
		}
	})
	return p
}

func (p *proc) start() {
	p.t.Helper()
	cmd := exec.Command(p.bin, p.args...)
	// Only what the flags say, no INFERGATE_* from the test's environment,
	// except that the demo upstream on loopback is allowed: through the
	// environment, which a binary without an upstream policy ignores.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "INFERGATE_") })
	cmd.Env = append(cmd.Env, "INFERGATE_UPSTREAM_ALLOW=127.0.0.1")
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done, p.err, p.expectExit = cmd, done, nil, false
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
}

// exited reports whether the process has ended by itself, and how.
func (p *proc) exited() (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		return !p.expectExit, p.err
	default:
		return false, nil
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.mu.Lock()
	p.expectExit = true
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// restart starts the process again, with the same arguments, after kill.
func (p *proc) restart() {
	p.t.Helper()
	p.kill()
	fmt.Fprintf(p.out, "=== restarted by the test at %s ===\n", time.Now().Format(time.RFC3339Nano))
	p.start()
}

// wait waits for the process to exit by itself (at most d) and says
// whether it did, and how.
func (p *proc) wait(d time.Duration) (exited bool, err error) {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
		p.mu.Lock()
		defer p.mu.Unlock()
		p.expectExit = true
		return true, p.err
	case <-time.After(d):
		return false, nil
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu      sync.Mutex // mu protects buf and written
	buf     []byte
	written int // bytes ever written
	max     int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.written += len(p)
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// mark is a position in the output, for since.
func (b *tailBuffer) mark() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.written
}

// since is what was written after mark (as much of it as is kept).
func (b *tailBuffer) since(mark int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := min(b.written-mark, len(b.buf))
	return string(b.buf[len(b.buf)-n:])
}

// tail is the last n lines.
func (b *tailBuffer) tail(n int) string {
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freePort is a loopback port free right now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

package testenv

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BuildCommands builds the named commands of cmd/ (e.g. "fleet", "archiver")
// into a new temporary folder and returns it. root is the repository root
// relative to the calling test's package (e.g. "../..").
func BuildCommands(root string, names ...string) (string, error) {
	dir, err := os.MkdirTemp("", "archivefleet-bin-")
	if err != nil {
		return "", err
	}
	args := []string{"build", "-o", dir + "/"}
	for _, n := range names {
		args = append(args, root+"/cmd/"+n)
	}
	cmd := exec.Command("go", args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("build %v: %w", names, err)
	}
	return dir, nil
}

// Proc is a service process started by a test: its output is kept, it can
// be waited on, signalled and measured (resident memory, CPU time).
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	Log  *Buffer
	done chan struct{}
	once sync.Once
	// ExitedAt is set when the process has exited.
	exitedAt time.Time
}

// StartProc runs bin with the environment env added to the test's own. The
// process is killed when the test ends (its log tail printed if it failed).
func StartProc(t testing.TB, name, bin string, env ...string) *Proc {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), env...)
	p := &Proc{Name: name, Cmd: cmd, Log: &Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.Log, p.Log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		cmd.Wait()
		p.exitedAt = time.Now()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("--- %s log (tail):\n%s", p.Name, p.Tail(60))
		}
	})
	return p
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Kill sends SIGKILL and waits for the process to end.
func (p *Proc) Kill() {
	select {
	case <-p.done:
	default:
		p.Cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

// Stop sends SIGTERM and returns how long the process took to exit; it fails
// the test (and kills the process) if it is still running after limit.
func (p *Proc) Stop(t testing.TB, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.exitedAt.Sub(start)
	case <-time.After(limit):
		p.Kill()
		t.Fatalf("%s still running %v after SIGTERM", p.Name, limit)
		return 0
	}
}

// ExitCode is the process's exit code once it has exited, else -1.
func (p *Proc) ExitCode() int {
	select {
	case <-p.done:
		return p.Cmd.ProcessState.ExitCode()
	default:
		return -1
	}
}

// WaitLog waits up to timeout for a log line holding every one of words and
// returns it; it fails the test if none comes or the process exits first.
func (p *Proc) WaitLog(t testing.TB, timeout time.Duration, words ...string) string {
	t.Helper()
	if line, ok := p.waitLog(timeout, words...); ok {
		return line
	}
	select {
	case <-p.done:
		t.Fatalf("%s exited (code %d) before logging %q; log tail:\n%s", p.Name, p.ExitCode(), words, p.Tail(40))
	default:
	}
	t.Fatalf("%s: no log line with %q within %v; log tail:\n%s", p.Name, words, timeout, p.Tail(40))
	return ""
}

func (p *Proc) waitLog(timeout time.Duration, words ...string) (string, bool) {
	for end := time.Now().Add(timeout); ; {
		if line, ok := p.FindLog(words...); ok {
			return line, true
		}
		select {
		case <-p.done:
			line, ok := p.FindLog(words...)
			return line, ok
		default:
		}
		if time.Now().After(end) {
			return "", false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// FindLog returns the first log line so far holding every one of words.
func (p *Proc) FindLog(words ...string) (string, bool) {
	sc := bufio.NewScanner(strings.NewReader(p.Log.String()))
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		ok := true
		for _, w := range words {
			ok = ok && strings.Contains(sc.Text(), w)
		}
		if ok {
			return sc.Text(), true
		}
	}
	return "", false
}

// Tail returns the last n lines of the log.
func (p *Proc) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(p.Log.String(), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

var attrRE = regexp.MustCompile(`(\w+)=("(?:[^"\\]|\\.)*"|\S+)`)

// LogAttr returns attribute key of a text-format slog line ("" if absent),
// unquoted.
func LogAttr(line, key string) string {
	for _, m := range attrRE.FindAllStringSubmatch(line, -1) {
		if m[1] == key {
			if v, err := strconv.Unquote(m[2]); err == nil {
				return v
			}
			return m[2]
		}
	}
	return ""
}

// PeakRSS is the process's peak resident memory since it started or since
// the last ResetPeakRSS (VmHWM), in bytes.
func (p *Proc) PeakRSS(t testing.TB) int64 {
	t.Helper()
	return procStatusKB(t, p.Cmd.Process.Pid, "VmHWM") << 10
}

// RSS is the process's resident memory now (VmRSS), in bytes.
func (p *Proc) RSS(t testing.TB) int64 {
	t.Helper()
	return procStatusKB(t, p.Cmd.Process.Pid, "VmRSS") << 10
}

// ResetPeakRSS starts a new peak: VmHWM becomes the current resident size
// (Linux: "5" written to /proc/<pid>/clear_refs).
func (p *Proc) ResetPeakRSS(t testing.TB) {
	t.Helper()
	if err := os.WriteFile(filepath.Join("/proc", strconv.Itoa(p.Cmd.Process.Pid), "clear_refs"), []byte("5"), 0); err != nil {
		t.Fatalf("reset peak RSS of %s: %v", p.Name, err)
	}
}

// CPUTime is the CPU time (user + system) the process has used so far.
func (p *Proc) CPUTime(t testing.TB) time.Duration {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p.Cmd.Process.Pid), "stat"))
	if err != nil {
		t.Fatalf("read stat of %s: %v", p.Name, err)
	}
	// Fields after the command name (which may hold spaces) start at ") ".
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// utime and stime are fields 14 and 15 of stat: 12 and 13 here.
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clockTicks
}

// clockTicks is USER_HZ, 100 on every Linux this runs on.
const clockTicks = 100

func procStatusKB(t testing.TB, pid int, field string) int64 {
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		t.Fatalf("read status of %d: %v", pid, err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("parse %s %q: %v", field, l, err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

package proc

import (
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"
)

// burnEnv makes a benchmark binary a CPU burner (see BurnIfAsked).
const burnEnv = "ARCHIVEFLEET_BENCH_BURN"

var sink byte

// BurnIfAsked turns this process into a CPU burner when it was started by
// StartBurners, and never returns then. Benchmarks with a loaded mode call
// it first thing in main.
func BurnIfAsked() {
	if os.Getenv(burnEnv) != "1" {
		return
	}
	runtime.GOMAXPROCS(1)
	parent := os.Getppid()
	x := uint64(1)
	for {
		for range 1 << 24 {
			x = x*6364136223846793005 + 1442695040888963407
		}
		sink ^= byte(x)
		if os.Getppid() != parent {
			os.Exit(0)
		}
	}
}

// StartBurners starts n copies of this binary spinning on a core each
// (like `stress -c n`; they die with us); the returned func kills exactly
// those processes.
func StartBurners(n int) (func(), error) {
	if n <= 0 {
		return func() {}, nil
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var cmds []*exec.Cmd
	stop := func() {
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
	}
	for range n {
		cmd := exec.Command(self)
		cmd.Env = append(os.Environ(), burnEnv+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			stop()
			return nil, err
		}
		cmds = append(cmds, cmd)
	}
	time.Sleep(200 * time.Millisecond) // let them reach full speed
	return stop, nil
}

package main

import (
	"os"
	"os/exec"
	"runtime"
	"slices"
	"syscall"
	"time"
)

// burnEnv makes this binary a CPU burner (see burn).
const burnEnv = "ARCHIVEFLEET_BENCH_BURN"

var sink byte

// startBurners starts n copies of this binary spinning on a core each; the
// returned func kills exactly those processes.
func startBurners(n int) func() {
	if n <= 0 {
		return func() {}
	}
	self, err := os.Executable()
	check(err)
	var cmds []*exec.Cmd
	for range n {
		cmd := exec.Command(self)
		cmd.Env = append(os.Environ(), burnEnv+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive us
		check(cmd.Start())
		cmds = append(cmds, cmd)
	}
	time.Sleep(200 * time.Millisecond) // let them reach full speed
	return func() {
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
	}
}

// burn spins one core (like `stress -c 1`) until its parent is gone.
func burn() {
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

// spread is the min, median and max of a float key over the rounds.
func spread(rounds []map[string]any, key string) (lo, med, hi float64) {
	v := make([]float64, len(rounds))
	for i, r := range rounds {
		v[i] = r[key].(float64)
	}
	slices.Sort(v)
	med = v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return v[0], med, v[len(v)-1]
}

package fleet

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// profileEnv names a file a service writes its CPU profile to, from start
// to exit: a diagnostic for benchmarks and operators, off when unset.
const profileEnv = "ARCHIVEFLEET_CPU_PROFILE"

// startProfile starts the CPU profile profileEnv asks for; the returned
// func stops it and completes the file.
func startProfile() (func(), error) {
	path := os.Getenv(profileEnv)
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", profileEnv, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", profileEnv, err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

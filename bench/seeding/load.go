package main

import (
	"slices"

	"github.com/archivefleet/archivefleet/bench/proc"
)

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

// startBurners starts n CPU burners (bench/proc) or exits.
func startBurners(n int) func() {
	stop, err := proc.StartBurners(n)
	check(err)
	return stop
}

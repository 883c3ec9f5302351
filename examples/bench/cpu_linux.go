package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// childCPU is the CPU time p has used so far, the sum of its threads' (a
// thread that ended no longer counts), from /proc, without waking p.
func childCPU(p *os.Process) (time.Duration, bool) {
	stats, err := filepath.Glob("/proc/" + strconv.Itoa(p.Pid) + "/task/*/schedstat")
	if err != nil || len(stats) == 0 {
		return 0, false
	}
	var sum time.Duration
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			return 0, false
		}
		// Time on a processor (ns), time waiting for one, time slices.
		ns, err := strconv.ParseInt(strings.Fields(string(b))[0], 10, 64)
		if err != nil {
			return 0, false
		}
		sum += time.Duration(ns)
	}
	return sum, true
}

//go:build linux

package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Operations per counted run: the difference between the two runs is what
// countMany-countFew operations cost, without the process's start and exit.
const countFew, countMany = 20, 220

// syscallsPer counts, with strace if it is installed, the system calls of
// one operation of role (see child). Every thread counts: Go moves a
// goroutine between threads, and a socket's client waits in another
// thread's poller. The runtime's timed sleeps (its monitor's ticks, which
// follow the clock, not the work, and strace slows both runs) do not.
func syscallsPer(role, dir string) (float64, bool) {
	strace, err := exec.LookPath("strace")
	if err != nil {
		return 0, false
	}
	var calls [2]int
	for i, n := range []int{countFew, countMany} {
		cmd, err := command(role, dir, "BENCH_COUNT="+strconv.Itoa(n))
		if err != nil {
			return 0, false
		}
		out := filepath.Join(dir, "strace-"+role)
		cmd.Path, cmd.Args = strace, append([]string{strace, "-f", "-c", "-o", out}, cmd.Args...)
		if err := cmd.Run(); err != nil {
			return 0, false // no ptrace here, say
		}
		if calls[i], err = straceCalls(out); err != nil {
			return 0, false
		}
	}
	return float64(calls[1]-calls[0]) / (countMany - countFew), true
}

// straceCalls sums the calls of a strace -c summary, but nanosleep's.
func straceCalls(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	total := 0
	s := bufio.NewScanner(f)
	for s.Scan() {
		// % time, seconds, usecs/call, calls, [errors,] syscall
		fields := strings.Fields(s.Text())
		if len(fields) < 5 {
			continue
		}
		name := fields[len(fields)-1]
		n, err := strconv.Atoi(fields[3])
		if err != nil || name == "total" || name == "nanosleep" {
			continue
		}
		total += n
	}
	return total, s.Err()
}

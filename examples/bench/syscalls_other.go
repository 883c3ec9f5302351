//go:build !linux

package main

// syscallsPer: the count needs strace, which is Linux's.
func syscallsPer(role, dir string) (float64, bool) { return 0, false }

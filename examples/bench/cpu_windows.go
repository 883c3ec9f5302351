package main

import (
	"os"
	"time"

	"golang.org/x/sys/windows"
)

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() (time.Duration, error) { return processTime(windows.CurrentProcess()) }

// childCPU is the CPU time p has used so far, without waking p.
func childCPU(p *os.Process) (time.Duration, bool) {
	h, err := windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION, false, uint32(p.Pid))
	if err != nil {
		return 0, false
	}
	defer windows.CloseHandle(h)
	d, err := processTime(h)
	return d, err == nil
}

func processTime(h windows.Handle) (time.Duration, error) {
	var creation, exit, kernel, user windows.Filetime
	if err := windows.GetProcessTimes(h, &creation, &exit, &kernel, &user); err != nil {
		return 0, err
	}
	ticks := func(f windows.Filetime) int64 { return int64(f.HighDateTime)<<32 | int64(f.LowDateTime) }
	return time.Duration(ticks(kernel)+ticks(user)) * 100, nil
}

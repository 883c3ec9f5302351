// Package winapi declares the Windows functions that golang.org/x/sys/windows
// lacks, as //sys lines in winapi.go. zsyscall_windows.go is generated from
// them by mkwinsyscall: run go generate after changing them.
package winapi

//go:generate go run golang.org/x/sys/windows/mkwinsyscall -output zsyscall_windows.go winapi.go

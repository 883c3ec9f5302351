//go:build windows

package winapi

//sys	OpenFileMapping(access uint32, inheritHandle bool, name *uint16) (handle windows.Handle, err error) = kernel32.OpenFileMappingW
//sys	AllowSetForegroundWindow(pid uint32) (err error) = user32.AllowSetForegroundWindow
//sys	ProcessPrng(buf *byte, size uintptr) (err error) = bcryptprimitives.ProcessPrng

// Command ipc is the simple IPC of the memory-mapped-file article: a
// provider writes data into a named shared region under a named mutex and
// signals; a consumer waits for the signal and reads the data.
//
//	ipc consumer [-timeout D] NAME  # wait for data (start this first; default 1m)
//	ipc provider NAME TEXT...       # write TEXT into NAME and signal
//	ipc remove NAME                 # remove the region's name (Unix)
//
// The region holds a doorbell word, the data's length and the data. On
// Windows a named region lasts while a process has it open, so start the
// consumer first; on Unix it stays until removed.
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/go-instance/instance/shm"
)

const (
	regionSize = 64 << 10
	offLen     = 8  // uint64 length of the data
	offData    = 16 // the data
)

func usage() {
	fmt.Fprintln(os.Stderr, "usage: ipc consumer [-timeout D] NAME | ipc provider NAME TEXT... | ipc remove NAME")
	os.Exit(2)
}

func main() {
	if len(os.Args) < 3 {
		usage()
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "provider":
		if len(args) < 2 {
			usage()
		}
		err = provide(args[0], strings.Join(args[1:], " "))
	case "consumer":
		fs := flag.NewFlagSet("consumer", flag.ExitOnError)
		timeout := fs.Duration("timeout", time.Minute, "how long to wait for the provider")
		fs.Parse(args)
		if fs.NArg() != 1 {
			usage()
		}
		err = consume(fs.Arg(0), *timeout)
	case "remove":
		err = shm.Remove(args[0])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ipc:", err)
		os.Exit(1)
	}
}

// open maps the region and opens the mutex that guards its data.
func open(name string) (*shm.Region, *shm.Mutex, *uint32, error) {
	r, err := shm.CreateOrOpen(name, regionSize)
	if err != nil {
		return nil, nil, nil, err
	}
	if r.Size() < offData {
		r.Close()
		return nil, nil, nil, fmt.Errorf("region %s is only %d bytes", name, r.Size())
	}
	mu, err := shm.OpenMutex(name)
	if err != nil {
		r.Close()
		return nil, nil, nil, err
	}
	word := (*uint32)(unsafe.Pointer(&r.Bytes()[0]))
	return r, mu, word, nil
}

func provide(name, text string) error {
	r, mu, word, err := open(name)
	if err != nil {
		return err
	}
	defer r.Close()
	defer mu.Close()
	b := r.Bytes()
	if len(text) > len(b)-offData {
		return fmt.Errorf("%d bytes do not fit in the %d-byte region", len(text), len(b)-offData)
	}
	if err := mu.Lock(); err != nil {
		return err
	}
	binary.LittleEndian.PutUint64(b[offLen:], uint64(len(text)))
	copy(b[offData:], text)
	if err := mu.Unlock(); err != nil {
		return err
	}
	bell, err := shm.OpenBell(word, name, false)
	if err != nil {
		return err
	}
	defer bell.Close()
	atomic.AddUint32(word, 1)
	if err := bell.Ring(); err != nil {
		return err
	}
	fmt.Printf("provider: wrote %d bytes to %s and signalled\n", len(text), name)
	return nil
}

func consume(name string, timeout time.Duration) error {
	r, mu, word, err := open(name)
	if err != nil {
		return err
	}
	defer r.Close()
	defer mu.Close()
	bell, err := shm.OpenBell(word, name, true)
	if err != nil {
		return err
	}
	defer bell.Close()
	seen := atomic.LoadUint32(word)
	fmt.Printf("consumer: waiting for a provider on %s\n", name)
	deadline := time.Now().Add(timeout)
	for atomic.LoadUint32(word) == seen {
		left := time.Until(deadline)
		if left <= 0 {
			return errors.New("no provider signalled within " + timeout.String())
		}
		if err := bell.Wait(seen, left); err != nil {
			return err
		}
	}
	if err := mu.Lock(); err != nil {
		return err
	}
	b := r.Bytes()
	n := binary.LittleEndian.Uint64(b[offLen:])
	data := string(b[offData : offData+min(n, uint64(len(b)-offData))])
	if err := mu.Unlock(); err != nil {
		return err
	}
	fmt.Printf("consumer: read %q\n", data)
	return nil
}

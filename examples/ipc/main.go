// Command ipc is the simple IPC of the memory-mapped-file article: a
// provider writes data into a named shared region under a named mutex and
// signals; a consumer waits for the signal and reads the data.
//
//	ipc consumer [-timeout D] NAME  # wait for data (default 1m), read it once
//	ipc provider NAME TEXT...       # write TEXT into NAME and signal
//	ipc remove NAME                 # remove the region's name (Unix)
//
// The region holds a doorbell word, a flag that data waits to be read,
// the data's length and the data. The consumer reads data that waits
// (and clears the flag), or waits for the signal; a later provider
// replaces data not yet read. On Unix the region stays until removed, so
// either may start first; on Windows a named region lasts while a process
// has it open, so start the consumer first.
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
	offReady   = 4  // uint32, 1 while data waits to be read
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
		text := strings.Join(args[1:], " ")
		if len(text) > regionSize-offData {
			// Before the region and the mutex are made.
			fmt.Fprintf(os.Stderr, "ipc: %d bytes do not fit in the %d-byte region\n", len(text), regionSize-offData)
			os.Exit(2)
		}
		err = provide(args[0], text)
	case "consumer":
		fs := flag.NewFlagSet("consumer", flag.ExitOnError)
		timeout := fs.Duration("timeout", time.Minute, "how long to wait for the provider")
		fs.Parse(args)
		if fs.NArg() != 1 || *timeout <= 0 {
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
	binary.LittleEndian.PutUint32(b[offReady:], 1)
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
	fmt.Printf("consumer: waiting for a provider on %s\n", name)
	deadline := time.Now().Add(timeout)
	for {
		// The word first: a provider that signals after it is read
		// changes it, and the wait returns at once.
		seen := atomic.LoadUint32(word)
		data, ok, err := take(r, mu)
		if err != nil {
			return err
		}
		if ok {
			fmt.Printf("consumer: read %q\n", data)
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return errors.New("no provider signalled within " + timeout.String())
		}
		if err := bell.Wait(seen, left); err != nil {
			return err
		}
	}
}

// take reads the data that waits in r, if any, and clears its flag.
func take(r *shm.Region, mu *shm.Mutex) (data string, ok bool, err error) {
	if err := mu.Lock(); err != nil {
		return "", false, err
	}
	defer func() {
		if uerr := mu.Unlock(); err == nil {
			err = uerr
		}
	}()
	b := r.Bytes()
	if binary.LittleEndian.Uint32(b[offReady:]) == 0 {
		return "", false, nil
	}
	n := binary.LittleEndian.Uint64(b[offLen:])
	data = string(b[offData : offData+min(n, uint64(len(b)-offData))])
	binary.LittleEndian.PutUint32(b[offReady:], 0)
	return data, true, nil
}

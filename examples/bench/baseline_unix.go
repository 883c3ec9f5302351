//go:build !windows

package main

import (
	"io"
	"net"
	"path/filepath"
)

// baselineName is the transport the other libraries use here.
const baselineName = "unix socket"

// listenBaseline listens on a Unix domain socket in dir.
func listenBaseline(dir string) (listener, error) {
	ln, err := net.Listen("unix", filepath.Join(dir, "sock"))
	if err != nil {
		return nil, err
	}
	return socketListener{ln}, nil
}

type socketListener struct{ net.Listener }

func (l socketListener) Accept() (io.ReadWriteCloser, error) { return l.Listener.Accept() }

// dialBaseline connects to the socket in dir.
func dialBaseline(dir string) (io.ReadWriteCloser, error) {
	return net.Dial("unix", filepath.Join(dir, "sock"))
}

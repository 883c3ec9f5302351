//go:build !windows

package baseline

import (
	"io"
	"net"
	"path/filepath"
)

// Name is the transport the other libraries use here.
const Name = "unix socket"

// Listen listens on a Unix domain socket in dir.
func Listen(dir string) (Listener, error) {
	ln, err := net.Listen("unix", filepath.Join(dir, "sock"))
	if err != nil {
		return nil, err
	}
	return socketListener{ln}, nil
}

type socketListener struct{ net.Listener }

func (l socketListener) Accept() (io.ReadWriteCloser, error) { return l.Listener.Accept() }

// Dial connects to the socket in dir.
func Dial(dir string) (io.ReadWriteCloser, error) {
	return net.Dial("unix", filepath.Join(dir, "sock"))
}

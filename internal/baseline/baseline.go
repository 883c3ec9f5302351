// Package baseline is the transport that the other single-instance
// libraries hand their arguments over, against which the bench program
// and the package's benchmarks measure the handoff: a Unix domain socket
// (on Windows a named pipe) to a server in another process. One exchange
// is what such a library's secondary does: connect, send 200 bytes, read
// a 1-byte acknowledgement, close.
package baseline

import "io"

// MessageSize is the size of the message of one exchange, as the bench's
// 200 bytes of arguments.
const MessageSize = 200

// Listener accepts the baseline's connections.
type Listener interface {
	Accept() (io.ReadWriteCloser, error)
	Close() error
}

// Serve answers every connection of ln, each in a goroutine of its own
// (as a Go server does), until ln is closed.
func Serve(ln Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var msg [MessageSize]byte
			if _, err := io.ReadFull(c, msg[:]); err == nil {
				c.Write([]byte{1})
			}
		}()
	}
}

// Exchange is one exchange with the server of dir: connect, send
// MessageSize bytes, read the 1-byte acknowledgement, close.
func Exchange(dir string) error {
	c, err := Dial(dir)
	if err != nil {
		return err
	}
	defer c.Close()
	var msg [MessageSize]byte
	if _, err := c.Write(msg[:]); err != nil {
		return err
	}
	var ack [1]byte
	_, err = io.ReadFull(c, ack[:])
	return err
}

package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	kcp "github.com/xtaci/kcp-go"
	"github.com/xtaci/smux"

	"gopeers/wire"
)

// frameConn carries length-prefixed frames (PROTOCOL.md "Framing") over one transport.
type frameConn interface {
	ReadFrame() ([]byte, error)
	WriteFrame(payload []byte) error
	SetDeadline(t time.Time) error
}

// dial opens the connections one client run uses: one, or with KCP and smux one per stream;
// the returned func closes everything.
func dial(o *options) ([]frameConn, func(), error) {
	switch o.transport {
	case "tcp":
		c, err := net.DialTimeout("tcp", o.addr, o.timeout)
		if err != nil {
			return nil, nil, err
		}
		return []frameConn{newStreamConn(c)}, func() { c.Close() }, nil
	case "ws":
		url := o.addr
		if !strings.Contains(url, "://") {
			url = "ws://" + url + "/ws"
		}
		d := websocket.Dialer{HandshakeTimeout: o.timeout}
		c, _, err := d.Dial(url, nil)
		if err != nil {
			return nil, nil, err
		}
		return []frameConn{&wsConn{c: c}}, func() { c.Close() }, nil
	case "kcp":
		return dialKCP(o)
	default:
		return nil, nil, fmt.Errorf("unknown transport %q (tcp, ws or kcp)", o.transport)
	}
}

// dialKCP dials as fabrica-net's kcp client does (kcp/client/dialer.go with conf.Default()
// and kcp/util/config.go's ConnConfigurer): kcp-go with FEC 10+3, no block cipher; nodelay
// 1/10/2/1, windows 128/128, MTU 1400, ACK no-delay, no write delay; then smux v2 with
// keepalive 10 s, timeout 30 s, MaxFrameSize 4096, MaxReceiveBuffer 4 MiB, one frame stream
// per smux stream.
func dialKCP(o *options) ([]frameConn, func(), error) {
	data, parity := 0, 0
	if o.fec {
		data, parity = o.dataShards, o.parityShards
	}
	sess, err := kcp.DialWithOptions(o.addr, nil, data, parity)
	if err != nil {
		return nil, nil, err
	}
	sess.SetNoDelay(1, 10, 2, 1)
	sess.SetWindowSize(128, 128)
	sess.SetMtu(1400)
	sess.SetACKNoDelay(true)
	sess.SetWriteDelay(false)
	if !o.smux {
		return []frameConn{newStreamConn(sess)}, func() { sess.Close() }, nil
	}
	cfg := smux.DefaultConfig()
	cfg.Version = 2
	cfg.KeepAliveInterval = 10 * time.Second
	cfg.KeepAliveTimeout = 30 * time.Second
	cfg.MaxFrameSize = 4096
	cfg.MaxReceiveBuffer = 4 * 1024 * 1024
	mux, err := smux.Client(sess, cfg)
	if err != nil {
		sess.Close()
		return nil, nil, fmt.Errorf("smux: %w", err)
	}
	closeAll := func() {
		mux.Close()
		sess.Close()
	}
	conns := make([]frameConn, 0, o.streams)
	for i := 0; i < o.streams; i++ {
		s, err := mux.OpenStream()
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("smux stream %d: %w", i, err)
		}
		conns = append(conns, newStreamConn(s))
	}
	return conns, closeAll, nil
}

// deadliner is what the byte-stream transports (TCP, a KCP session, a smux stream) share.
type deadliner interface {
	io.ReadWriter
	SetDeadline(t time.Time) error
}

type streamConn struct {
	c deadliner
	r *bufio.Reader
}

func newStreamConn(c deadliner) *streamConn {
	return &streamConn{c: c, r: bufio.NewReader(c)}
}

func (s *streamConn) ReadFrame() ([]byte, error)    { return wire.ReadFrame(s.r) }
func (s *streamConn) WriteFrame(p []byte) error     { return wire.WriteFrame(s.c, p) }
func (s *streamConn) SetDeadline(t time.Time) error { return s.c.SetDeadline(t) }

// wsConn carries one frame, length prefix included, per binary WebSocket message.
type wsConn struct{ c *websocket.Conn }

func (w *wsConn) ReadFrame() ([]byte, error) {
	kind, msg, err := w.c.ReadMessage()
	if err != nil {
		return nil, err
	}
	if kind != websocket.BinaryMessage {
		return nil, fmt.Errorf("a WebSocket message of type %d, not binary", kind)
	}
	if len(msg) < 4 || int(binary.BigEndian.Uint32(msg)) != len(msg)-4 {
		return nil, fmt.Errorf("a WebSocket message of %d bytes that is not one frame", len(msg))
	}
	return msg[4:], nil
}

func (w *wsConn) WriteFrame(p []byte) error {
	msg := make([]byte, 4+len(p))
	binary.BigEndian.PutUint32(msg, uint32(len(p)))
	copy(msg[4:], p)
	return w.c.WriteMessage(websocket.BinaryMessage, msg)
}

func (w *wsConn) SetDeadline(t time.Time) error {
	if err := w.c.SetReadDeadline(t); err != nil {
		return err
	}
	return w.c.SetWriteDeadline(t)
}

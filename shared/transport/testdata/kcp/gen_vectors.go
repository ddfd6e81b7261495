// Command gen_vectors writes the KCP/FEC and smux byte vectors that shared/transport/src/kcp's unit tests
// compare against. It drives the real Go libraries (kcp-go, smux, reedsolomon as Debian ships
// them) and records what they put on the wire; it was run once and its output committed:
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go run shared/transport/testdata/kcp/gen_vectors.go shared/transport/testdata/kcp
package main

import (
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	kcp "github.com/xtaci/kcp-go"
	"github.com/xtaci/smux"
)

// fecCapture dials a UDP socket that never answers with FEC 10+3 and records the first
// datagrams kcp-go sends: ten data shards, one per write, and the group's three parity shards.
func fecCapture(dir string) {
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	check(err)
	sess, err := kcp.DialWithOptions(sink.LocalAddr().String(), nil, 10, 3)
	check(err)
	sess.SetNoDelay(1, 10, 2, 1)
	sess.SetWindowSize(128, 128)
	sess.SetMtu(1400)
	sess.SetACKNoDelay(true)
	for i := 0; i < 10; i++ {
		// Different lengths, so the parity covers zero padding.
		_, err := sess.Write([]byte(strings.Repeat(string(rune('a'+i)), 10+i*7)))
		check(err)
	}
	var lines []string
	buf := make([]byte, 2048)
	for len(lines) < 13 {
		n, _, err := sink.ReadFrom(buf)
		check(err)
		lines = append(lines, hex.EncodeToString(buf[:n]))
	}
	sess.Close()
	write(dir, "fec_10_3.hex", lines)
}

// recorder is one end of a pipe that logs every write.
type recorder struct {
	net.Conn
	mu  *sync.Mutex
	log *[]string
	tag string
}

func (r recorder) Write(b []byte) (int, error) {
	r.mu.Lock()
	*r.log = append(*r.log, r.tag+" "+hex.EncodeToString(b))
	r.mu.Unlock()
	return r.Conn.Write(b)
}

// smuxCapture runs a smux v2 client and server (fabrica-net's settings) over a pipe: the client
// opens a stream and writes "hello", the server reads it and answers "world", the client reads
// that and closes the stream. Each line is "c"/"s" (who wrote) and the bytes.
func smuxCapture(dir string) {
	a, b := net.Pipe()
	var mu sync.Mutex
	var log []string
	config := smux.DefaultConfig()
	config.Version = 2
	config.MaxFrameSize = 4096
	config.MaxReceiveBuffer = 4 * 1024 * 1024
	client, err := smux.Client(recorder{a, &mu, &log, "c"}, config)
	check(err)
	server, err := smux.Server(recorder{b, &mu, &log, "s"}, config)
	check(err)
	done := make(chan struct{})
	go func() {
		s, err := server.AcceptStream()
		check(err)
		got := make([]byte, 5)
		_, err = io.ReadFull(s, got)
		check(err)
		_, err = s.Write([]byte("world"))
		check(err)
		_, err = s.Read(got) // EOF after the client's FIN
		if err != io.EOF {
			panic(fmt.Sprint("want EOF, got ", err))
		}
		close(done)
	}()
	s, err := client.OpenStream()
	check(err)
	_, err = s.Write([]byte("hello"))
	check(err)
	got := make([]byte, 5)
	_, err = io.ReadFull(s, got)
	check(err)
	time.Sleep(50 * time.Millisecond) // let the server's window update go out first
	check(s.Close())
	<-done
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	write(dir, "smux_v2.hex", log)
	mu.Unlock()
}

func write(dir, name string, lines []string) {
	check(os.WriteFile(filepath.Join(dir, name), []byte(strings.Join(lines, "\n")+"\n"), 0o644))
}

func check(err error) {
	if err != nil {
		panic(err)
	}
}

func main() {
	dir := os.Args[1]
	fecCapture(dir)
	smuxCapture(dir)
}

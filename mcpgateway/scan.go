package mcpgateway

// msgInfo is what jsonScanner learned about one JSON-RPC message.
type msgInfo struct {
	id        string // canonical id ("" when none)
	hasMethod bool   // a request or notification, not a response
	isError   bool   // result.isError is true (a tool result that failed)
}

// jsonScanner reads one JSON document (a JSON-RPC message, or a batch of
// them) byte by byte and reports, per message, its id, whether it has a
// method and whether result.isError is true, keeping only the nesting
// stack and a few short values: a large result streams through it without
// being held.
type jsonScanner struct {
	// decided is called once per message as soon as its id (or its
	// method key) has been read, so a caller can decide early what to do
	// with the rest of the message.
	decided func(m *msgInfo)
	// message is called when a message is complete.
	message func(m msgInfo)
	// batch is called when the document turns out to be an array.
	batch func()

	started  bool
	msgDepth int    // depth of a message's members: 1, or 2 in a batch
	stack    []bool // per open container: is it an object
	broken   bool   // malformed or too deep: inspection stops

	inString, escape, isKey, expectKey bool
	inScalar                           bool
	keys                               [3]string // member name at depth 1 and 2 of the message
	buf                                []byte    // current key or captured value
	capture                            int       // what the current value is: capNone, capID, capIsError
	cur                                msgInfo
	curDecided                         bool
}

const (
	capNone = iota
	capID
	capIsError
	capSkip // a key or value longer than we keep
)

const (
	maxScanDepth = 1000
	maxKeptBytes = 256
)

func (s *jsonScanner) reset() {
	*s = jsonScanner{decided: s.decided, message: s.message, batch: s.batch, stack: s.stack[:0], buf: s.buf[:0]}
}

// relDepth is the depth relative to the current message (1: its members).
func (s *jsonScanner) relDepth() int { return len(s.stack) - s.msgDepth + 1 }

func (s *jsonScanner) inObject() bool { return len(s.stack) > 0 && s.stack[len(s.stack)-1] }

// write feeds the scanner.
func (s *jsonScanner) write(p []byte) {
	for _, c := range p {
		if s.broken {
			return
		}
		s.step(c)
	}
}

func (s *jsonScanner) step(c byte) {
	if s.inString {
		switch {
		case s.escape:
			s.escape = false
		case c == '\\':
			s.escape = true
		case c == '"':
			s.inString = false
			s.endString()
			return
		}
		s.keep(c)
		return
	}
	if s.inScalar {
		switch c {
		case ' ', '\t', '\r', '\n', ',', '}', ']':
			s.inScalar = false
			s.endValue()
		default:
			s.keep(c)
			return
		}
	}
	switch c {
	case ' ', '\t', '\r', '\n', ':':
	case '{', '[':
		if !s.started {
			s.started = true
			s.msgDepth = 1
			if c == '[' {
				s.msgDepth = 2
				if s.batch != nil {
					s.batch()
				}
			}
		} else {
			s.startValue()
		}
		if len(s.stack) >= maxScanDepth {
			s.broken = true
			return
		}
		s.stack = append(s.stack, c == '{')
		s.expectKey = c == '{'
		if c == '{' && s.relDepth() == 1 {
			s.cur, s.curDecided, s.keys = msgInfo{}, false, [3]string{}
		}
	case '}', ']':
		if len(s.stack) == 0 {
			s.broken = true
			return
		}
		s.stack = s.stack[:len(s.stack)-1]
		s.expectKey = false
		if c == '}' && s.relDepth() == 0 {
			s.decide()
			if s.message != nil {
				s.message(s.cur)
			}
		}
	case ',':
		s.expectKey = s.inObject()
	case '"':
		s.inString = true
		if s.expectKey {
			s.isKey, s.expectKey = true, false
			s.buf, s.capture = s.buf[:0], capNone
			return
		}
		s.isKey = false
		s.startValue()
		s.keep('"')
	default:
		if !s.started {
			s.broken = true // not an object or array
			return
		}
		s.inScalar = true
		s.startValue()
		s.keep(c)
	}
}

// keep appends c to the current key or captured value, up to a bound.
func (s *jsonScanner) keep(c byte) {
	if !s.isKey && s.capture == capNone || s.capture == capSkip {
		return
	}
	if len(s.buf) >= maxKeptBytes {
		s.capture, s.buf = capSkip, s.buf[:0]
		return
	}
	s.buf = append(s.buf, c)
}

// startValue notes which value begins, from the member names above it.
func (s *jsonScanner) startValue() {
	s.buf, s.capture = s.buf[:0], capNone
	switch d := s.relDepth(); {
	case d == 1 && s.keys[1] == "id":
		s.capture = capID
	case d == 1 && s.keys[1] == "method":
		s.cur.hasMethod = true
		s.decide()
	case d == 2 && s.keys[1] == "result" && s.keys[2] == "isError":
		s.capture = capIsError
	}
}

func (s *jsonScanner) endString() {
	if s.isKey {
		s.isKey = false
		name := string(s.buf)
		if s.capture == capSkip {
			name = "" // longer than any name we look for
		}
		if d := s.relDepth(); d >= 1 && d <= 2 {
			s.keys[d] = name
			if d == 1 {
				s.keys[2] = ""
			}
		}
		s.buf, s.capture = s.buf[:0], capNone
		return
	}
	s.keep('"')
	s.endValue()
}

func (s *jsonScanner) endValue() {
	switch s.capture {
	case capID:
		s.cur.id = canonicalID(s.buf)
		s.decide()
	case capIsError:
		s.cur.isError = string(s.buf) == "true"
	}
	s.buf, s.capture = s.buf[:0], capNone
}

func (s *jsonScanner) decide() {
	if s.curDecided {
		return
	}
	if s.cur.id == "" && !s.cur.hasMethod && s.relDepth() >= 1 {
		return // neither known yet: the message goes on
	}
	s.curDecided = true
	if s.decided != nil {
		s.decided(&s.cur)
	}
}

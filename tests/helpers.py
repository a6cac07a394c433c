"""Small test doubles shared by the spine's tests."""

from twisted.internet import protocol

from callhome_mux.connection import ClassifiedConnection


class RecordingProtocol(protocol.Protocol):
    """Takes over a connection and records everything it receives."""

    def __init__(self, connection: ClassifiedConnection, handler: "RecordingHandler"):
        self.connection = connection
        self.handler = handler
        self.received = b""
        self.lost = None
        self.made = False

    def connectionMade(self):
        self.made = True
        if self.handler.reply is not None:
            self.transport.write(self.handler.reply)

    def dataReceived(self, data):
        self.received += data
        for waiter in self.handler.byte_waiters[:]:
            size, deferred = waiter
            if len(self.received) >= size:
                self.handler.byte_waiters.remove(waiter)
                deferred.callback(self)

    def connectionLost(self, reason):
        self.lost = reason


class RecordingHandler:
    """A connection handler that accepts everything and keeps the protocols."""

    def __init__(self, reply=None, refuse=False):
        self.protocols = []
        self.reply = reply
        self.refuse = refuse
        self.byte_waiters = []
        self.waiters = []

    def protocolFor(self, connection):
        if self.refuse:
            return None
        proto = RecordingProtocol(connection, self)
        self.protocols.append(proto)
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            waiter.callback(proto)
        return proto

    def whenHandled(self):
        from twisted.internet import defer

        waiter = defer.Deferred()
        self.waiters.append(waiter)
        return waiter

    def whenReceived(self, size):
        from twisted.internet import defer

        waiter = defer.Deferred()
        self.byte_waiters.append((size, waiter))
        return waiter


class EventLog:
    """An EventBus observer keeping every event."""

    def __init__(self, events=None):
        self.events = []
        if events is not None:
            events.addObserver(self)

    def __call__(self, event):
        self.events.append(event)

    def named(self, name):
        return [event for event in self.events if event["event"] == name]

    def names(self):
        return [event["event"] for event in self.events]

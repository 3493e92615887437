//! A `tracing` writer that keeps everything written, for the secrets tests to search.
//! Shared by them, and by the store tests, through `#[path]` (each test is its own crate).

use std::io;
use std::sync::{Arc, Mutex, OnceLock};

use tracing::Dispatch;

use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// A writer under a TRACE subscriber for this thread, until the guard is dropped.
    ///
    /// `tracing` decides once per line whether anyone listens. While a single subscriber is
    /// registered, it asks the thread that reaches the line first, and a sibling test's thread
    /// has none: the line would be dropped for this capture too. A second subscriber, kept
    /// registered for the whole process, makes it ask every registered one instead.
    pub fn trace() -> (Captured, tracing::subscriber::DefaultGuard) {
        static ASK_EVERY_SUBSCRIBER: OnceLock<Dispatch> = OnceLock::new();
        ASK_EVERY_SUBSCRIBER.get_or_init(|| Dispatch::new(tracing_subscriber::registry()));
        let log = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(log.clone())
            .with_ansi(false)
            .finish();
        (log, tracing::subscriber::set_default(subscriber))
    }

    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

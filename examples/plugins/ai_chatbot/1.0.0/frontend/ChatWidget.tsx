import { useState } from 'react';
import AIChatBot from './AIChatBot';

/** A floating button that opens the assistant on any page of the panel. */
export default function ChatWidget() {
  const [open, setOpen] = useState(false);
  return (
    <div className="chat-widget">
      {open && (
        <div className="chat-widget__panel" role="dialog" aria-label="NextPanel assistant">
          <header className="chat-widget__header">
            <span>Assistant</span>
            <button onClick={() => setOpen(false)} aria-label="Close">
              ×
            </button>
          </header>
          <AIChatBot compact />
        </div>
      )}
      {!open && (
        <button className="chat-widget__toggle" onClick={() => setOpen(true)} aria-label="Open the assistant">
          💬
        </button>
      )}
    </div>
  );
}

// Chainlit 2.11+ opens the side panel by itself whenever an answer with side
// elements arrives, filled with every side element of the chat (chainlit#2979).
// A click on a link like [1] opens just that element, so a panel showing more
// than one element was not asked for: close it, and keep the chat in view.
(() => {
  const closeUnaskedPanel = () => {
    const content = document.getElementById("side-view-content");
    if (!content || content.children.length <= 1) return;
    const back = document.querySelector("#side-view-title button");
    if (back) back.click();
    else document.dispatchEvent(new KeyboardEvent("keydown", { key: "Escape", bubbles: true }));
  };
  new MutationObserver(closeUnaskedPanel).observe(document.documentElement, { childList: true, subtree: true });
})();

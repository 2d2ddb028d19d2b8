// The tiny example's page: the server's list goes live, then follows every change.
import { connect, newId, renderList } from "/sync/client.js";

const sync = await connect(); // hydrates from the page's embedded state
const $ = (selector) => document.querySelector(selector);
const items = sync.query({ c: "items", order: [["added", "asc"]] });
renderList($("#items"), $("#row"), items, { collection: "items", pristine: sync.pristine });
sync.status.subscribe((status) => ($("#status").textContent = $("#status").dataset.state = status));

$("#add").addEventListener("submit", (event) => {
  event.preventDefault();
  sync.insert("items", newId(), { text: $("#text").value, votes: 0, added: Date.now() / 1000 });
  $("#text").value = "";
});
$("#items").addEventListener("click", (event) => {
  const id = event.target.closest("li")?.dataset.id;
  if (event.target.closest(".vote")) sync.increment("items", id, "votes", 1);
  if (event.target.closest(".remove")) sync.delete("items", id);
});
